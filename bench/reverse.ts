/**
 * Reverse replication bench: one reverse cycle of a 1% scattered change on a 4 GiB disk (512 MiB with
 * --quick), beside rsync between two copies in the same run.
 * - The point is the synthetic disk (../shared/tools/mkdisk.py, seed 17); the on-premises disk is a copy
 *   of it. The failed-over VM (the reverse test's rig: the service, the agent, qemu under TCG over the
 *   point's NBD export) writes 1% of the disk's 64 KiB blocks, chosen at random, with random data
 *   (qemu-io through the monitor into the hoster's overlay).
 * - Ours: the reverse cycle (bitmap, log sealed to the agent's key, stored) plus the agent's apply;
 *   bytes sent is the sealed log's size against the changed bytes (goal ≤ 1.1x).
 * - Peer: `rsync --no-whole-file --ignore-times --inplace` of the hoster's disk (converted to raw) onto
 *   another copy of the point (without those flags a local rsync copies whole files or skips by size
 *   and time): its wall time (goal: ours ≤ 1x) and its literal data.
 * qemu-img compare checks both results before any figure is printed.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { registerNewEnvelopeKey } from '../agent/reverse/keys.js';
import { execFileP } from '../test/helpers.js';
import { startReverseRig } from '../test/reverse/harness.js';
import { runCommand, secs, syntheticDisk, timeIt, type Benchmark, type BenchRow } from './lib.js';

const MiB = 1 << 20;
const Block = 64 << 10;
const note = (m: string) => process.stderr.write(`bench: reverse: ${m}\n`);

/** count distinct block indexes below blocks, from a seeded generator (the same blocks every run). */
function scattered(blocks: number, count: number, seed: number): number[] {
  let x = seed >>> 0;
  const next = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  const chosen = new Set<number>();
  while (chosen.size < count) chosen.add(next() % blocks);
  return [...chosen].sort((a, b) => a - b);
}

async function identical(a: string[], b: string): Promise<void> {
  const r = await execFileP('qemu-img', ['compare', '-U', ...a, b]).catch((e: { stdout: string; stderr: string }) => e);
  const out = (r.stdout + r.stderr).trim();
  if (out !== 'Images are identical.') throw new Error(`reverse bench: ${b} differs from the hoster's disk: ${out}`);
}

export const reverseBench: Benchmark = {
  name: 'reverse',
  description: 'a reverse cycle of a 1% scattered change on a 4 GiB disk: bytes sent vs changed, time beside rsync --no-whole-file --inplace',
  async run(ctx) {
    const sizeMiB = ctx.quick ? 512 : 4096;
    const size = sizeMiB * MiB;
    const synthetic = await syntheticDisk(ctx, sizeMiB, 17);
    const rig = await startReverseRig(size, async (point, onPrem) => {
      await runCommand('cp', ['--sparse=always', synthetic, point]);
      await runCommand('cp', ['--sparse=always', synthetic, onPrem]);
    }, 'lifeboat-bench-rv-');
    const rows: BenchRow[] = [];
    try {
      await registerNewEnvelopeKey(rig.state.dir, rig.files);
      const blocks = scattered(size / Block, Math.round(size / Block / 100), 17);
      const src = join(rig.dir, 'src');
      await mkdir(src);
      note(`writing ${blocks.length} random 64 KiB blocks at the hoster`);
      for (const [i, b] of blocks.entries()) {
        const file = join(src, `${i}.bin`);
        await writeFile(file, randomBytes(Block));
        const out = await rig.hmp(`write -s ${file} ${b * Block} ${Block}`);
        if (out.trim() !== '') throw new Error(`qemu-io write: ${out.trim()}`);
      }
      await rig.hmp('flush');
      const changed = blocks.length * Block;

      let cycle: Awaited<ReturnType<typeof rig.cycle>> | undefined;
      const cycleS = await timeIt(async () => { cycle = await rig.cycle(); });
      const applyS = await timeIt(() => rig.apply());
      const d = cycle!.disks[0]!;
      if (d.changedBytes !== changed) throw new Error(`reverse bench: the cycle counted ${d.changedBytes} changed bytes, ${changed} were written`);
      await identical(rig.hosterUncommitted(), rig.onPrem);
      note(`cycle ${secs(cycleS)}, apply ${secs(applyS)}, log ${d.size} bytes for ${changed} changed`);

      // The peer: two copies in the same run, the hoster's disk as raw onto a copy of the point.
      const hosterRaw = join(rig.dir, 'hoster.raw');
      const target = join(rig.dir, 'rsync-target.raw');
      await runCommand('qemu-img', ['convert', '-U', '-O', 'raw', ...rig.hosterUncommitted(), hosterRaw]);
      await runCommand('cp', ['--sparse=always', synthetic, target]);
      const rsync = await runCommand('rsync', ['--no-whole-file', '--ignore-times', '--inplace', '--stats', hosterRaw, target]);
      await identical([hosterRaw], target);
      const literal = Number(/Literal data: ([\d,]+)/.exec(rsync.stdout)?.[1]?.replaceAll(',', '') ?? NaN);
      const sent = Number(/Total bytes sent: ([\d,]+)/.exec(rsync.stdout)?.[1]?.replaceAll(',', '') ?? NaN);
      const ours = cycleS + applyS;
      const bytesRatio = d.size / changed;
      rows.push({
        name: `reverse: bytes sent / changed, ${sizeMiB} MiB 1%`, ours: `${(d.size / MiB).toFixed(2)} MiB`, peer: `${(changed / MiB).toFixed(2)} MiB`,
        ratio: `${bytesRatio.toFixed(3)}x`, goal: '≤ 1.1x', ok: bytesRatio <= 1.1,
      });
      rows.push({
        name: `reverse: cycle + apply vs rsync, ${sizeMiB} MiB 1%`, ours: `${secs(cycleS)} + ${secs(applyS)}`, peer: secs(rsync.seconds),
        ratio: `${(ours / rsync.seconds).toFixed(2)}x`, goal: '≤ 1x rsync', ok: ours <= rsync.seconds,
      });
      rows.push({
        name: 'reverse: rsync literal data / total sent', ours: `${(literal / MiB).toFixed(2)} MiB`, peer: `${(sent / MiB).toFixed(2)} MiB`,
        ratio: `${(literal / changed).toFixed(3)}x`, goal: 'report', ok: undefined,
      });
    } finally {
      await rig.stop();
    }
    return rows;
  },
};
