/**
 * NBD export benchmark: a dense 1 GiB point (the synthetic disk converted by our convertDisk into a
 * fixed VHDX, so every block is allocated data) read sequentially through our NbdServer with
 * `nbdcopy … null:`, beside `qemu-nbd -r -f raw` serving the same bytes from a fully allocated raw
 * file, both over a unix socket, both from the page cache. Three interleaved rounds; each side's best
 * time is shown (after one untimed pass each) and the ratio is the median of the rounds' throughput ratios (goal ≥ 0.8x qemu-nbd).
 * Each side's CPU time per GiB served (user + system, of our process and of qemu-nbd) is shown too.
 * `npx tsx bench/nbd.ts [--quick]` runs it alone.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openDisk } from '../shared/disk/index.js';
import { convertDisk } from '../shared/disk/ops/index.js';
import { NbdServer } from '../service/failover/nbd/server.js';
import { mbps, runCommand, syntheticDisk, type Benchmark, type BenchContext, type BenchRow } from './lib.js';

const Rounds = 3;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** CPU seconds (user + system) a process has used so far, from /proc (clock ticks of 1/100 s). */
async function cpuSecondsOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const ownCpuSeconds = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };

async function waitForSocket(path: string): Promise<void> {
  for (let i = 0; i < 200 && !existsSync(path); i++) await new Promise((r) => setTimeout(r, 25));
  if (!existsSync(path)) throw new Error(`${path} did not appear`);
}

async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const sizeMiB = ctx.quick ? 256 : 1024;
  const synthetic = await syntheticDisk(ctx, sizeMiB);
  const dense = join(ctx.workDir, `nbd-dense-${sizeMiB}.raw`);
  const vhdx = join(ctx.workDir, `nbd-dense-${sizeMiB}.vhdx`);
  if (!existsSync(dense)) await runCommand('cp', ['--sparse=never', synthetic, dense]);
  if (!existsSync(vhdx)) {
    const src = await openDisk(dense, { readOnly: true });
    try { await convertDisk(src, vhdx, 'vhdx', { type: 'fixed' }); } finally { await src.close(); }
  }
  for (const f of [dense, vhdx]) await runCommand('dd', [`if=${f}`, 'of=/dev/null', 'bs=4M']); // page cache
  const bytes = sizeMiB * 1024 * 1024;

  const oursSock = join(ctx.workDir, 'nbd-ours.sock');
  const qemuSock = join(ctx.workDir, 'nbd-qemu.sock');
  await rm(qemuSock, { force: true });
  const server = new NbdServer({
    resolve: async (name) => (name === 'point' ? { name, size: bytes, open: () => openDisk(vhdx, { readOnly: true }) } : undefined),
  });
  await server.listenUnix(oursSock);
  const qemu = spawn('qemu-nbd', ['-r', '-f', 'raw', '-k', qemuSock, '-x', 'point', '-e', '8', '-t', dense], { stdio: 'ignore' });
  try {
    await waitForSocket(qemuSock);
    const copy = async (sock: string) => (await runCommand('nbdcopy', [`nbd+unix:///point?socket=${sock}`, 'null:'])).seconds;
    const ours: number[] = [];
    const peer: number[] = [];
    let oursCpu = 0;
    let peerCpu = 0;
    // One untimed pass each: a serving process is warm (compiled code, slabs) long before anyone measures it.
    await copy(qemuSock);
    await copy(oursSock);
    for (let i = 0; i < Rounds; i++) {
      const q0 = await cpuSecondsOf(qemu.pid!);
      peer.push(await copy(qemuSock));
      peerCpu += (await cpuSecondsOf(qemu.pid!)) - q0;
      const o0 = ownCpuSeconds();
      ours.push(await copy(oursSock));
      oursCpu += ownCpuSeconds() - o0;
    }
    const ratios = ours.map((t, i) => peer[i]! / t);
    const ratio = median(ratios);
    const served = server.stats().bytesRead;
    const perGiB = (cpu: number) => `${(cpu / Rounds / (bytes / 2 ** 30)).toFixed(2)} CPU-s/GiB`;
    process.stderr.write(`bench: nbd: ours ${ours.map((t) => mbps(bytes, t)).join(', ')}; qemu-nbd ${peer.map((t) => mbps(bytes, t)).join(', ')}; `
      + `ratios ${ratios.map((r) => r.toFixed(2)).join(', ')}; ours ${perGiB(oursCpu)}, qemu-nbd ${perGiB(peerCpu)}\n`);
    return [{
      name: `nbd: nbdcopy of a dense ${sizeMiB} MiB point`,
      ours: `${mbps(bytes, Math.min(...ours))} (${perGiB(oursCpu)})`,
      peer: `${mbps(bytes, Math.min(...peer))} qemu-nbd (${perGiB(peerCpu)})`,
      ratio: `${ratio.toFixed(2)}x`,
      goal: '≥ 0.8x',
      ok: ratio >= 0.8 && served === bytes * (Rounds + 1),
    }];
  } finally {
    qemu.kill();
    await server.close();
    await rm(qemuSock, { force: true });
  }
}

export const nbdBench: Benchmark = {
  name: 'nbd',
  description: 'sequential read of a dense point through our NBD export vs qemu-nbd (nbdcopy)',
  run,
};

// Run alone: npx tsx bench/nbd.ts [--quick]
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  const ctx: BenchContext = {
    workDir: process.env.LIFEBOAT_BENCH_DIR ?? join(root, '.bench'),
    mkdisk: join(root, '..', 'shared', 'tools', 'mkdisk.py'),
    quick: process.argv.includes('--quick'),
  };
  for (const row of await nbdBench.run(ctx)) {
    console.log(`${row.ok ? '✓' : '✗'} ${row.name}: ours ${row.ours}, peer ${row.peer}, ratio ${row.ratio} (goal ${row.goal})`);
  }
}
