/**
 * What a cycle through the qemu source costs beside the scan tracker (issue 20's cost goals), on a
 * 16 GiB raw disk (a sparse file) of a paused qemu (TCG; nothing runs in the guest, so the figures are
 * the disk's and not a busy emulated CPU's):
 *
 * - 1% of the disk changed in scattered 64 KiB writes at 4 KiB-aligned offsets (seeded), through HMP
 *   `qemu-io` into the running qemu's drive, so the VM's dirty bitmap sees them.
 * - bytes read: the qemu source's NBD READs (the frozen bitmap's dirty granules) against the written
 *   bytes rounded up to the bitmap's granularity (goal ≤ 1.1x).
 * - cycle time: begin (overlay, transaction, NBD export), BLOCK_STATUS, reading every dirty granule
 *   (16 READs in flight), end, beside a scan-tracker cycle over the same disk. The scan is timed as
 *   for a disk whose every block holds data (`consultExtents: false`: the 16 GiB are read, the holes
 *   as zeros from the kernel, so from memory: kinder to the scan than a real device), which is the
 *   goal's comparison (≤ 0.1x); the scan as the agent runs it on this sparse file (holes skipped by
 *   SEEK_DATA) is printed beside it, since on a sparse file it reads little more than the changes.
 * - copy-before-write: the time of the VM's writes while a view is open (each first write into a
 *   granule copies the old data into the fleecing overlay) against the same number of writes without
 *   a view, in interleaved rounds, fresh offsets each time; ratio = throughput with / without (goal
 *   ≥ 0.8x), the median of the rounds. Beside it qemu's own CPU time for the same writes (from /proc),
 *   which a loaded machine disturbs less than wall time.
 *
 * `npx tsx bench/qemu-source.ts [--quick]` runs it alone (--quick: a 1 GiB disk).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { ScanTracker } from '../agent/tracker/scan.js';
import { openDisk } from '../shared/disk/index.js';
import { QmpClient } from '../shared/qmp/client.js';
import { QemuSource, type QemuCycle } from '../shared/qemu/source.js';
import { seededRandom } from '../shared/random.js';
import type { Benchmark, BenchContext, BenchRow } from './lib.js';

const GiB = 1 << 30;
const Granularity = 64 * 1024;
const WriteLength = 64 * 1024;
const CbwRounds = 5;
const CbwWrites = 400;
const ReadsInFlight = 16;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (t: number) => `${(t / 1000).toFixed(2)} s`;
const mib = (b: number) => `${(b / (1 << 20)).toFixed(1)} MiB`;

/** CPU seconds (user + system) a process has used so far, from /proc (clock ticks of 1/100 s). */
async function cpuSecondsOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** A paused qemu with the disk as a virtio drive (node `disk0`, drive `drive0`) and its QMP socket. */
async function startQemu(dir: string, disk: string): Promise<{ qemu: ChildProcess; qmp: QmpClient }> {
  const sock = join(dir, 'vm.qmp');
  const qemu = spawn('qemu-system-x86_64', ['-S', '-nodefaults', '-display', 'none', '-accel', 'tcg', '-m', '32',
    '-drive', `file=${disk},format=raw,if=none,id=drive0,node-name=disk0,cache=writeback`, '-device', 'virtio-blk-pci,drive=drive0',
    '-qmp', `unix:${sock},server=on,wait=off`], { stdio: 'ignore' });
  const deadline = Date.now() + 30_000;
  while (!existsSync(sock)) {
    if (qemu.exitCode !== null || Date.now() > deadline) throw new Error('qemu did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  return { qemu, qmp: await QmpClient.connect(sock) };
}

/** Distinct 4 KiB-aligned offsets for `count` writes of WriteLength, none overlapping another. */
function scatteredOffsets(size: number, count: number, taken: Set<number>, random: () => number): number[] {
  const out: number[] = [];
  const slots = size / WriteLength;
  // Each write takes its slot and keeps both neighbours free: a third of the slots at most.
  if ((taken.size + count) * 3 > slots) throw new Error(`bench: ${count} more scattered writes do not fit a disk of ${slots} slots`);
  while (out.length < count) {
    const slot = Math.floor(random() * (slots - 1));
    if (taken.has(slot) || taken.has(slot + 1) || taken.has(slot - 1)) continue;
    taken.add(slot);
    out.push(slot * WriteLength + Math.floor(random() * 16) * 4096);
  }
  return out.sort((a, b) => a - b);
}

async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const size = (ctx.quick ? 1 : 16) * GiB;
  const dir = join(ctx.workDir, 'qemu-source');
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const disk = join(dir, 'disk.raw');
  const f = await open(disk, 'w');
  await f.truncate(size);
  await f.close();
  const { qemu, qmp } = await startQemu(dir, disk);
  const random = seededRandom(20);
  const taken = new Set<number>();
  let qemuCpu = 0;
  const hmpWrites = async (offsets: number[], pattern: number) => {
    const c = await cpuSecondsOf(qemu.pid!);
    const t = performance.now();
    for (const o of offsets) await qmp.hmp(`qemu-io drive0 "write -P 0x${pattern.toString(16)} ${o} ${WriteLength}"`);
    const ms = performance.now() - t;
    qemuCpu = await cpuSecondsOf(qemu.pid!) - c;
    return ms;
  };
  try {
    const source = new QemuSource({ qmp, node: 'disk0', workDir: dir, persistent: false, granularity: Granularity });
    await source.protect();
    const scanFull = new ScanTracker({ mapPath: join(dir, 'full.map'), pendingPath: join(dir, 'full.map.pending'), consultExtents: false });
    const scanSparse = new ScanTracker({ mapPath: join(dir, 'sparse.map'), pendingPath: join(dir, 'sparse.map.pending') });
    const scanCycle = async (scan: ScanTracker) => {
      const image = await openDisk(disk, { readOnly: true });
      try {
        const t = performance.now();
        const c = await scan.begin(image);
        for await (const e of c.extents()) void e;
        await c.commit();
        return { ms: performance.now() - t, changed: c.changedBytes, read: 'readBytes' in c ? Number(c.readBytes) : NaN };
      } finally { await image.close(); }
    };
    process.stderr.write('bench: qemu-source: baseline scans\n');
    await scanCycle(scanFull);
    await scanCycle(scanSparse);

    const count = Math.round(size / 100 / WriteLength);
    const offsets = scatteredOffsets(size, count, taken, random);
    process.stderr.write(`bench: qemu-source: ${count} writes of 64 KiB through HMP qemu-io\n`);
    const writeMs = await hmpWrites(offsets, 0x5a);
    const written = count * WriteLength;
    const granules = new Set(offsets.flatMap((o) => [Math.floor(o / Granularity), Math.floor((o + WriteLength - 1) / Granularity)])).size * Granularity;

    const full = await scanCycle(scanFull);
    const sparse = await scanCycle(scanSparse);

    // The qemu source's cycle, then the VM's writes while its view is still open.
    const t0 = performance.now();
    const cycle = await source.begin();
    let changed = 0;
    const extents: Array<{ offset: number; length: number }> = [];
    for await (const e of cycle.extents()) { changed += e.length; extents.push(e); }
    await readAll(cycle, extents);
    const readDoneMs = performance.now() - t0;
    const cbw: number[] = [await hmpWrites(scatteredOffsets(size, CbwWrites, taken, random), 0x6b)];
    const cbwCpu = [qemuCpu];
    const t1 = performance.now();
    await cycle.commit();
    const qemuMs = readDoneMs + (performance.now() - t1);
    const plain: number[] = [await hmpWrites(scatteredOffsets(size, CbwWrites, taken, random), 0x6b)];
    const plainCpu = [qemuCpu];
    for (let r = 1; r < CbwRounds; r++) {
      const c = await source.begin();
      cbw.push(await hmpWrites(scatteredOffsets(size, CbwWrites, taken, random), 0x7c));
      cbwCpu.push(qemuCpu);
      await c.commit();
      plain.push(await hmpWrites(scatteredOffsets(size, CbwWrites, taken, random), 0x7c));
      plainCpu.push(qemuCpu);
    }
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    const cpuRatio = sum(plainCpu) / sum(cbwCpu);
    const writeRatios = cbw.map((c, i) => plain[i]! / c);
    const writeRatio = median(writeRatios);

    const load = loadavg()[0]!.toFixed(1);
    process.stderr.write([
      `bench: qemu-source: load average ${load}; disk ${size / GiB} GiB sparse raw, ${count} writes of 64 KiB (${mib(written)}) in ${ms(writeMs)} through HMP`,
      `  qemu source: changed ${mib(changed)} (written, rounded to ${Granularity / 1024} KiB granules: ${mib(granules)}), read ${mib(cycle.readBytes)}, cycle ${ms(qemuMs)}`,
      `  scan, every block read: changed ${mib(full.changed)}, read ${mib(full.read)}, cycle ${ms(full.ms)}; scan skipping the file's holes: read ${mib(sparse.read)}, cycle ${ms(sparse.ms)}`,
      `  ${CbwWrites} writes of 64 KiB with a view open / without, per round: ${cbw.map((c, i) => `${ms(c)} / ${ms(plain[i]!)}`).join(', ')}`,
      `  qemu's CPU for them, all rounds: ${sum(cbwCpu).toFixed(2)} / ${sum(plainCpu).toFixed(2)} CPU-s (ratio ${cpuRatio.toFixed(2)})`,
      '',
    ].join('\n'));
    const readRatio = cycle.readBytes / granules;
    const timeRatio = qemuMs / full.ms;
    return [
      { name: `qemu source ${size / GiB} GiB: bytes read / changed (granules)`, ours: mib(cycle.readBytes), peer: mib(granules), ratio: `${readRatio.toFixed(3)}x`, goal: '≤ 1.1x', ok: readRatio <= 1.1 && changed === granules && full.changed === granules },
      { name: `qemu source ${size / GiB} GiB: cycle time vs scan`, ours: ms(qemuMs), peer: ms(full.ms), ratio: `${timeRatio.toFixed(3)}x`, goal: '≤ 0.1x', ok: timeRatio <= 0.1 },
      { name: `qemu source ${size / GiB} GiB: cycle vs scan of the sparse file`, ours: ms(qemuMs), peer: ms(sparse.ms), ratio: `${(qemuMs / sparse.ms).toFixed(3)}x`, goal: '(shown)', ok: undefined },
      { name: 'qemu source: VM writes with the view / without', ours: ms(median(cbw)), peer: ms(median(plain)), ratio: `${writeRatio.toFixed(2)}x`, goal: '≥ 0.8x', ok: writeRatio >= 0.8 },
      { name: 'qemu source: qemu CPU for those writes, without / with', ours: `${sum(cbwCpu).toFixed(2)} CPU-s`, peer: `${sum(plainCpu).toFixed(2)} CPU-s`, ratio: `${cpuRatio.toFixed(2)}x`, goal: '(shown)', ok: undefined },
    ];
  } finally {
    await qmp.close();
    if (qemu.exitCode === null) { qemu.kill('SIGKILL'); await new Promise((r) => qemu.once('exit', r)); }
    await rm(dir, { recursive: true, force: true });
  }
}

/** Reads every dirty extent through the view, ReadsInFlight granules at a time, as the engine's reader keeps the socket busy. */
async function readAll(cycle: QemuCycle, extents: Array<{ offset: number; length: number }>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: ReadsInFlight }, async () => {
    const buf = Buffer.alloc(Granularity);
    while (next < extents.length) {
      const e = extents[next++]!;
      for (let at = e.offset; at < e.offset + e.length; at += Granularity) await cycle.readInto(at, buf.subarray(0, Math.min(Granularity, e.offset + e.length - at)));
    }
  }));
}

export const qemuSourceBench: Benchmark = {
  name: 'qemu-source',
  description: 'a 1% scattered change on a 16 GiB disk of a paused qemu: qemu source (dirty bitmap, NBD view) beside the scan tracker, and copy-before-write cost to the VM\'s writes',
  run,
};

// Run alone: npx tsx bench/qemu-source.ts [--quick]
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  const ctx: BenchContext = { workDir: process.env.LIFEBOAT_BENCH_DIR ?? join(root, '.bench'), mkdisk: '', quick: process.argv.includes('--quick') };
  for (const row of await qemuSourceBench.run(ctx)) {
    console.log(`${row.ok === false ? '✗' : row.ok ? '✓' : '·'} ${row.name}: ours ${row.ours}, peer ${row.peer}, ratio ${row.ratio} (goal ${row.goal})`);
  }
}
