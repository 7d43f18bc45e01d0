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
 * `npm run bench -- failback` (below) measures the failback window.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { registerNewEnvelopeKey } from '../agent/reverse/keys.js';
import type { FailbackReport } from '../service/failback/report.js';
import { QemuDriver } from '../service/failover/drivers/qemu.js';
import { FailoverScenario, must } from '../test/failover/failover-harness.js';
import { execFileP } from '../test/helpers.js';
import { startReverseRig } from '../test/reverse/harness.js';
import { runCommand, secs, syntheticDisk, timeIt, type Benchmark, type BenchRow } from './lib.js';

const MiB = 1 << 20;
const Block = 64 << 10;
const note = (m: string) => process.stderr.write(`bench: reverse: ${m}\n`);
const fbNote = (m: string) => process.stderr.write(`bench: failback: ${m}\n`);
const agentBin = join(import.meta.dirname, '..', 'bin', 'lifeboat-agent.js');

/** count distinct block indexes below blocks, from a seeded generator (the same blocks every run). */
function scattered(blocks: number, count: number, seed: number): number[] {
  let x = seed >>> 0;
  const next = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  const chosen = new Set<number>();
  while (chosen.size < count) chosen.add(next() % blocks);
  return [...chosen].sort((a, b) => a - b);
}

/**
 * The VM writes 1% of the disk's 64 KiB blocks (seeded choice), each with its own random data from a
 * file under src, through qemu-io (qemuIo runs one qemu-io command on disk0), then flushes.
 */
async function writeOnePercent(size: number, seed: number, src: string, qemuIo: (cmd: string) => Promise<string>): Promise<number[]> {
  const blocks = scattered(size / Block, Math.round(size / Block / 100), seed);
  await mkdir(src);
  process.stderr.write(`bench: writing ${blocks.length} random 64 KiB blocks at the hoster\n`);
  for (const [i, b] of blocks.entries()) {
    const file = join(src, `${i}.bin`);
    await writeFile(file, randomBytes(Block));
    const out = await qemuIo(`write -s ${file} ${b * Block} ${Block}`);
    if (out.trim() !== '') throw new Error(`qemu-io write: ${out.trim()}`);
  }
  await qemuIo('flush');
  return blocks;
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
      const blocks = await writeOnePercent(size, 17, join(rig.dir, 'src'), (cmd) => rig.hmp(cmd));
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

/**
 * The failback window: a planned failover of a VM with the synthetic disk (4 GiB; 512 MiB with --quick)
 * through the agent daemon, committed; the VM writes 1% of its 64 KiB blocks at the hoster (random
 * data); then the failback (failover host as a process of its own, the daemon applying and confirming,
 * a start hook that succeeds). The window is the report's: from the stop at the hoster to started at
 * home. The failback test's harness (FailoverScenario) runs it; its ready probe is a TCP port this
 * process listens on (the disk boots nothing).
 */
export const failbackBench: Benchmark = {
  name: 'failback',
  description: 'the failback window (stop at the hoster to started at home) for 1% of a 4 GiB disk changed since the last reverse cycle',
  async run(ctx) {
    const sizeMiB = ctx.quick ? 512 : 4096;
    const size = sizeMiB * MiB;
    const synthetic = await syntheticDisk(ctx, sizeMiB, 17);
    const s = await FailoverScenario.start({ externalHost: true });
    const probe = createServer((c) => c.end()).listen(0, '127.0.0.1');
    const rows: BenchRow[] = [];
    const children: ChildProcess[] = [];
    const startHost = async () => { const h = await s.startHostProcess(); children.push(h); return h; };
    try {
      await new Promise((r) => probe.once('listening', r));
      const source = join(s.env.dir, 'web1.raw');
      await runCommand('cp', ['--sparse=always', synthetic, source]);
      await s.protect('web1', [source]);
      let t0 = Date.now();
      await s.replicate();
      fbNote(`${sizeMiB} MiB replicated in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
      await registerNewEnvelopeKey(s.state.dir, await s.state.readIdentity());
      const port = (probe.address() as { port: number }).port;
      must(await s.api('PUT', '/v1/tenants/acme/vms/web1/hardware', { firmware: 'bios', cpus: 1, memoryMiB: 64, guestOs: 'other', disks: { disk0: { bus: 'ide', order: 0 } }, readyProbes: [{ kind: 'tcp', host: '127.0.0.1', port }] }), 'hardware');
      let host = await startHost();
      const daemon = spawn(process.execPath, [agentBin, 'run', '--state-dir', s.state.dir], { stdio: 'ignore' });
      children.push(daemon);
      const id = await s.whileMerging(async () => {
        const r = must(await s.api('POST', '/v1/tenants/acme/vms/web1/failovers', { kind: 'planned' }), 'planned failover');
        await s.waitFor(r.body.id, (x) => x.state === 'running', 30 * 60_000);
        return r.body.id;
      });
      await s.state.writeConfig({ ...(await s.state.readConfig('web1')), paused: true });
      must(await s.api('POST', `/v1/failovers/${id}/commit`, {}), 'commit');
      await s.waitFor(id, (x) => x.state === 'committed', 30 * 60_000);
      fbNote('planned failover committed; the VM writes 1% at the hoster');

      // The host process holds the monitor: it goes while the VM writes.
      host.kill('SIGKILL');
      await new Promise((r) => host.once('exit', r));
      const driver = new QemuDriver({ stateDir: join(s.hostDir, 'test') });
      const blocks = await writeOnePercent(size, 23, join(s.env.dir, 'src'), async (cmd) => (await driver.qmp(s.workDir(id))).hmp(`qemu-io -d disk0 "${cmd}"`));
      await driver.close();

      await s.state.writeConfig({ ...(await s.state.readConfig('web1')), startHook: 'true' });
      host = await startHost();
      t0 = Date.now();
      must(await s.api('POST', `/v1/failovers/${id}/failback`, { shutdownTimeoutSeconds: 2 }), 'failback');
      // The window measured at 512 MiB is seconds: ten minutes without an end is a stall, reported as such.
      let report: FailbackReport;
      for (;;) {
        report = must(await s.api<FailbackReport>('GET', `/v1/failovers/${id}/failback`), 'report').body;
        if (report.endedAt !== null || Date.now() - t0 > 10 * 60_000) break;
        await new Promise((res) => setTimeout(res, 500));
      }
      const name = `failback: window, ${sizeMiB} MiB 1% (${(blocks.length * Block / MiB).toFixed(1)} MiB)`;
      if (report.endedAt === null) {
        const last = report.steps.at(-1);
        fbNote(`failback still ${report.state} after 10 minutes: ${JSON.stringify(report.steps)}`);
        rows.push({ name, ours: `stalled: ${report.state}`, peer: '-', ratio: `since ${last?.step ?? '-'} ${last?.status ?? ''}`, goal: 'report', ok: false });
        return rows;
      }
      if (report.result !== 'done') throw new Error(`failback ${report.result}: ${report.error}`);
      const eq = report.equality as { equal: boolean; disks: { writtenBytes: number }[] };
      if (!eq.equal) throw new Error('failback: the agent did not confirm the disks equal');
      await runCommand('qemu-img', ['compare', '-q', '-U', '-f', 'raw', source, synthetic]).then(() => { throw new Error('failback: the on-premises disk did not change'); }, () => undefined);
      const steps = report.steps.filter((x) => x.status === 'done' && typeof x.seconds === 'number').map((x) => `${x.step} ${x.seconds!.toFixed(1)}`).join(', ');
      fbNote(`failback report: window ${report.windowSeconds} s; ${steps}; written ${eq.disks[0]?.writtenBytes} bytes`);
      rows.push({ name, ours: `${report.windowSeconds} s`, peer: '-', ratio: steps, goal: 'report', ok: undefined });
    } finally {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      probe.close();
      await s.stop();
    }
    return rows;
  },
};
