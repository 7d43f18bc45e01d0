/**
 * Disk benchmarks: (a) converting the synthetic raw disk to a dynamic VHDX with our library (and
 * through `lifeboat-agent disk convert`) beside `qemu-img convert -O vhdx -o subformat=dynamic`
 * (goal: ours ≤ 1.2x qemu's time); (b) reading a fixed VHDX (every block allocated) sequentially
 * from the page cache with our reader beside `dd` reading the raw file (goal: ≥ 1 GB/s).
 * Conversions run interleaved, twice each, best time kept. The ratio is of our library in this
 * process; the CLI's time (with Node's start-up) is shown beside it.
 */
import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { openDisk } from '../shared/disk/index.js';
import { ChunkSize } from '../shared/disk/ops/copy.js';
import { convertDisk } from '../shared/disk/ops/index.js';
import { mbps, runCommand, secs, syntheticDisk, timeIt, type Benchmark, type BenchContext, type BenchRow } from './lib.js';

const agentBin = resolve(import.meta.dirname, '..', 'bin', 'lifeboat-agent.js');

/** Reads the whole virtual disk through our reader, one chunk at a time; returns seconds. */
async function readAll(path: string): Promise<{ seconds: number; bytes: number }> {
  const disk = await openDisk(path, { readOnly: true });
  const buf = Buffer.allocUnsafe(ChunkSize);
  try {
    const seconds = await timeIt(async () => {
      for (let at = 0; at < disk.virtualSize; at += ChunkSize) await disk.read(at, buf.subarray(0, Math.min(ChunkSize, disk.virtualSize - at)));
    });
    return { seconds, bytes: disk.virtualSize };
  } finally {
    await disk.close();
  }
}

/** Our conversion in this process: the library's cost without the command's start-up. */
async function convertFile(src: string, dst: string): Promise<void> {
  const disk = await openDisk(src, { readOnly: true });
  try {
    await convertDisk(disk, dst, 'vhdx', { type: 'dynamic' });
  } finally {
    await disk.close();
  }
}

async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const sizeMiB = ctx.quick ? 512 : 4096;
  const raw = await syntheticDisk(ctx, sizeMiB);
  const ours = join(ctx.workDir, `convert-ours-${sizeMiB}.vhdx`);
  const peer = join(ctx.workDir, `convert-qemu-${sizeMiB}.vhdx`);
  const clean = () => Promise.all([rm(ours, { force: true }), rm(peer, { force: true })]);
  await clean();
  await runCommand('dd', [`if=${raw}`, 'of=/dev/null', 'bs=4M']); // into the page cache

  const rows: BenchRow[] = [];
  try {
    // Interleaved, best of two each, so a burst of writeback from a neighbour hits both sides alike.
    let qemuSeconds = Infinity;
    let libSeconds = Infinity;
    let cliSeconds = Infinity;
    for (let i = 0; i < 2; i++) {
      await rm(peer, { force: true });
      qemuSeconds = Math.min(qemuSeconds, (await runCommand('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic', raw, peer])).seconds);
      await rm(ours, { force: true });
      libSeconds = Math.min(libSeconds, await timeIt(() => convertFile(raw, ours)));
      await rm(ours, { force: true });
      cliSeconds = Math.min(cliSeconds, (await runCommand(process.execPath, [agentBin, 'disk', 'convert', raw, ours, '--format', 'vhdx'])).seconds);
    }
    await runCommand('qemu-img', ['compare', '-f', 'raw', '-F', 'vhdx', raw, ours]);
    const ratio = libSeconds / qemuSeconds;
    rows.push({ name: `convert ${sizeMiB} MiB raw → dynamic VHDX`, ours: secs(libSeconds), peer: `${secs(qemuSeconds)} qemu-img`, ratio: `${ratio.toFixed(2)}x`, goal: '≤ 1.2x', ok: ratio <= 1.2 });
    const startup = (await runCommand(process.execPath, [agentBin, '--version'])).seconds;
    rows.push({
      name: `  same through the CLI (startup ${secs(startup)})`, ours: secs(cliSeconds), peer: `${secs(qemuSeconds)} qemu-img`,
      ratio: `${(cliSeconds / qemuSeconds).toFixed(2)}x`, goal: '(informational)', ok: undefined,
    });

    // A fixed VHDX has every block allocated: every byte read goes through the BAT to the file.
    await rm(peer, { force: true });
    await runCommand('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=fixed', raw, peer]);
    await readAll(peer); // into the page cache
    const read = await readAll(peer);
    const dd = await runCommand('dd', [`if=${raw}`, 'of=/dev/null', 'bs=4M']);
    const rate = read.bytes / read.seconds;
    rows.push({
      name: `sequential read ${sizeMiB} MiB fixed VHDX (page cache)`, ours: mbps(read.bytes, read.seconds), peer: `${mbps(read.bytes, dd.seconds)} dd raw`,
      ratio: `${(dd.seconds / read.seconds).toFixed(2)}x`, goal: '≥ 1000 MB/s', ok: rate >= 1e9,
    });
  } finally {
    await clean();
  }
  return rows;
}

export const diskBenchmark: Benchmark = {
  name: 'disk',
  description: 'raw → dynamic VHDX conversion vs qemu-img; sequential VHDX read vs dd',
  run,
};
