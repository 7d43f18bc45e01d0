/**
 * Reverse replication end to end with real parts: the service (PostgreSQL, its agent endpoint, the
 * file object store), a failed-over VM under the qemu driver (TCG) whose overlay reads the point from
 * qemu-nbd, writes made at the hoster with qemu-io through HMP, reverse cycles, and the agent's
 * applier on an on-premises copy of the point. qemu-img compare is the referee at each stage: the
 * hoster's disk (the overlay over the point, then the committed overlay alone) against the on-premises
 * disk. Then tampering, truncation, replay and another tenant's agent.
 */
import { execFileSync } from 'node:child_process';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReverseClient } from '../../agent/reverse/client.js';
import { applyReverse, readReverseState } from '../../agent/reverse/apply.js';
import { registerNewEnvelopeKey } from '../../agent/reverse/keys.js';
import type { AgentState, IdentityFiles } from '../../agent/state/store.js';
import type { ReverseLog } from '../../shared/protocol/schemas.js';
import { execFileP, runBin } from '../helpers.js';
import { enrolledAgent, httpsJson } from '../service/helpers.js';
import { getFailover, insertFailover, setFailoverState, upsertHost } from '../../service/catalog/failovers.js';
import { insertFailback } from '../../service/catalog/failbacks.js';
import type { HostRuntime } from '../../service/failover/job.js';
import { createFailoverQueues } from '../../service/failover/queue.js';
import { connectRedis } from '../../service/queue.js';
import { lastReverseCapture, reconcileReverseCycles, reverseCycleJobId, reverseNotDue, runReverseCycleJob } from '../../service/reverse/schedule.js';
import { Queue } from 'bullmq';
import { ReverseVm, startReverseRig, type ReverseRig } from './harness.js';

const hasQemu = (() => { try { execFileSync('qemu-system-x86_64', ['--version']); return true; } catch { return false; } })();
const Size = 16 << 20;
const vm = ReverseVm;

/** Deterministic non-trivial content: every 64 KiB block a different byte pattern, some blocks zero. */
function pointImage(): Buffer {
  const b = Buffer.alloc(Size);
  for (let i = 0; i < Size / 65536; i++) if (i % 5 !== 0) b.fill((i * 37) & 0xff, i * 65536, (i + 1) * 65536);
  return b;
}

async function compare(hoster: string[], onPrem: string): Promise<string> {
  const r = await execFileP('qemu-img', ['compare', '-U', ...hoster, onPrem]).catch((e: { stdout: string; stderr: string }) => e);
  return (r.stdout + r.stderr).trim();
}

describe.skipIf(!hasQemu)('reverse replication (skipped only when qemu-system-x86_64 is missing)', () => {
  let rig: ReverseRig;
  let files: IdentityFiles;
  let state: AgentState;
  const onPrem = () => rig.onPrem;
  const overlay = () => rig.overlay;
  const hosterUncommitted = () => rig.hosterUncommitted();

  beforeAll(async () => {
    rig = await startReverseRig(Size, async (point, onPremPath) => {
      await writeFile(point, pointImage());
      await copyFile(point, onPremPath);
    });
    ({ files, state } = rig);
  }, 120_000);

  afterAll(async () => {
    await rig?.stop();
  });

  const cycle = () => rig.cycle();
  const apply = () => rig.apply();
  const hmp = (cmd: string) => rig.hmp(cmd);

  it('refuses a cycle until the agent registered an envelope key', async () => {
    await expect(cycle()).rejects.toThrow(/registered no envelope key/);
  });

  it('ships the hoster\'s writes cycle by cycle; the on-premises disk equals the hoster\'s at each stage', async () => {
    const first = await registerNewEnvelopeKey(state.dir, files);
    expect(first.newest).toBe(true);

    // Writes at the hoster before the first reverse cycle: all of them go in its delta.
    await hmp('write -P 0xa1 1M 64k');
    await hmp('write -P 0xa2 5M 200k');
    await hmp('write -z 8M 128k');
    await hmp('flush');
    const c1 = await cycle();
    expect(c1.disks).toEqual([expect.objectContaining({ generation: 1, sequence: 1, kind: 'delta' })]);
    // The bitmap's granule is 64 KiB: 64 K + 256 K (200 K from 5 M spans 4 granules) + 128 K.
    expect(c1.disks[0]!.changedBytes).toBe((64 + 256 + 128) << 10);
    expect(await compare(hosterUncommitted(), onPrem())).not.toBe('Images are identical.');
    const applied1 = await apply();
    expect(applied1).toEqual([expect.objectContaining({ disk: 'disk0', generation: 1, sequence: 1, appliedLogs: 1, pendingLogs: 0 })]);
    expect(await compare(hosterUncommitted(), onPrem())).toBe('Images are identical.');

    // A cycle with nothing written is an empty incremental log.
    const c2 = await cycle();
    expect(c2.disks[0]).toMatchObject({ sequence: 2, kind: 'incremental', changedBytes: 0, dataBytes: 0 });

    // Commit (block-stream): the overlay stands alone; later writes go on shipping.
    await rig.driver.commit(rig.workDir);
    await hmp('write -P 0xb3 3M 4k');
    await hmp('write -P 0xb4 15M 1M');
    await hmp('flush');
    const c3 = await cycle();
    expect(c3.disks[0]).toMatchObject({ sequence: 3, kind: 'incremental', changedBytes: (64 << 10) + (1 << 20) });
    // The agent catches up with two logs in one pass.
    const applied2 = await apply();
    expect(applied2[0]).toMatchObject({ generation: 1, sequence: 3, appliedLogs: 2 });
    expect(await compare([overlay()], onPrem())).toBe('Images are identical.');
    // A second pass finds nothing to do.
    expect((await apply())[0]).toMatchObject({ sequence: 3, appliedLogs: 0 });

    // The service knows what the agent applied: no lag.
    const status = await new ReverseClient(files).status(vm);
    expect(status.disks).toEqual([expect.objectContaining({ disk: 'disk0', generation: 1, latestSequence: 3, appliedSequence: 3, pendingLogs: 0, pendingBytes: 0 })]);
  }, 300_000);

  it('rotation: new logs are sealed to the newest key and the old key still opens the logs sealed to it', async () => {
    await hmp('write -P 0xc5 2M 64k');
    await hmp('flush');
    const before = await cycle();
    const second = await registerNewEnvelopeKey(state.dir, files);
    expect(second.kid).not.toBe(before.kid);
    await hmp('write -P 0xc6 6M 64k');
    await hmp('flush');
    const after = await cycle();
    expect(after.kid).toBe(second.kid);
    const applied = await apply();
    expect(applied[0]).toMatchObject({ sequence: 5, appliedLogs: 2 });
    expect(await compare([overlay()], onPrem())).toBe('Images are identical.');
  }, 300_000);

  it('a tampered, truncated or replayed reverse log is refused with nothing applied', async () => {
    await hmp('write -P 0xd7 9M 64k');
    await hmp('flush');
    const c = await cycle();
    const real = new ReverseClient(files);
    const { logs } = await real.logs(vm, 'disk0', { generation: 1, sequence: 5 });
    const log = logs[0]!;
    expect(log.sequence).toBe(c.disks[0]!.sequence);
    const parts: Buffer[] = [];
    for await (const chunk of await real.download(log)) parts.push(chunk as Buffer);
    const bytes = Buffer.concat(parts);
    const onPremBefore = await readFile(onPrem());
    const attempt = (serve: (l: ReverseLog) => Buffer, list: (l: ReverseLog) => ReverseLog = (l) => l) => applyReverse({
      state, files, vm, disks: [onPrem()],
      client: {
        status: (v) => real.status(v),
        applied: (v, d, g, s) => real.applied(v, d, g, s),
        logs: async (v, d, after) => ({ disk: d, logs: (await real.logs(v, d, after)).logs.map(list) }),
        download: async (l) => Readable.from([serve(l)]),
      },
    });
    // One bit flipped in the middle of the object.
    const flipped = Buffer.from(bytes);
    flipped[Math.floor(flipped.length / 2)]! ^= 0x10;
    await expect(attempt(() => flipped)).rejects.toThrow(/refused, nothing of it applied/);
    // Cut short by 100 bytes.
    await expect(attempt(() => bytes.subarray(0, bytes.length - 100))).rejects.toThrow(/refused, nothing of it applied/);
    // An older log of this disk (sequence 1, listed with its own key, size and digest) served in place of this one.
    const older = (await real.logs(vm, 'disk0', { generation: 1, sequence: 1 })).logs[0]!;
    const olderBytes: Buffer[] = [];
    for await (const chunk of await real.download(older)) olderBytes.push(chunk as Buffer);
    await expect(attempt(() => Buffer.concat(olderBytes), (l) => ({ ...l, kid: older.kid, size: older.size, sha256: older.sha256 }))).rejects.toThrow(/replayed under another name/);
    // Nothing reached the disk, nothing was recorded.
    expect((await readFile(onPrem())).equals(onPremBefore)).toBe(true);
    expect((await readReverseState(state, vm)).disks['disk0']).toMatchObject({ generation: 1, sequence: 5 });
    // The real log then applies.
    expect((await apply())[0]).toMatchObject({ sequence: 6, appliedLogs: 1 });
    expect(await compare([overlay()], onPrem())).toBe('Images are identical.');
  }, 300_000);

  it('lifeboat-agent reverse applies the next log (--json), and refuses bad input in one line', async () => {
    await hmp('write -P 0xe8 12M 128k');
    await hmp('flush');
    await cycle();
    const r = await runBin('agent', ['reverse', vm, '--disk', onPrem(), '--once', '--json', '--state-dir', state.dir]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { vm: string; disks: { disk: string; sequence: number; appliedLogs: number }[] };
    expect(out).toMatchObject({ vm, disks: [{ disk: 'disk0', sequence: 7, appliedLogs: 1 }] });
    expect(await compare([overlay()], onPrem())).toBe('Images are identical.');
    const two = await runBin('agent', ['reverse', vm, '--disk', onPrem(), onPrem(), '--once', '--state-dir', state.dir]);
    expect(two.code).toBe(1);
    expect(two.stderr.trim().split('\n')).toEqual([expect.stringMatching(/VM vm1 has 1 disk\(s\) \(disk0\); 2 --disk given/)]);
    const help = await runBin('agent', ['reverse', '--help']);
    expect(help.stdout).toMatch(/--target-dir/);
  }, 300_000);

  it('an agent of another tenant can neither list nor fetch reverse logs', async () => {
    const svc = rig.svc;
    const other = await enrolledAgent(svc, 'globex', '*.globex.test', 'hv1.globex.test');
    const ca = svc.ctx.ca.certPem;
    for (const path of [`/v1/vms/${vm}/reverse`, `/v1/vms/${vm}/disks/disk0/reverse/logs`]) {
      const r = await httpsJson(`${svc.agentUrl}${path}`, { caPem: ca, identity: other });
      expect(r.status, path).toBe(404);
    }
    const r = await httpsJson(`${svc.agentUrl}/v1/vms/${vm}/disks/disk0/reverse/applied`, { method: 'POST', body: { generation: 1, sequence: 1 }, caPem: ca, identity: other });
    expect(r.status).toBe(404);
    // Its own envelope key does not make the service seal acme's logs to it.
    const keys = await httpsJson<{ keys: unknown[] }>(`${svc.agentUrl}/v1/envelope-keys`, { caPem: ca, identity: other });
    expect(keys.body.keys).toEqual([]);
  });

  it('the failover host runs a reverse cycle per committed failover at the VM\'s frequency; status shows the reverse lag', async () => {
    const { svc, driver } = rig;
    const db = svc.ctx.db;
    await upsertHost(db, { name: 'rv-host', cpus: 1, memoryMiB: 1024, storageBytes: 1 << 30, networks: [], pid: process.pid });
    const f = await insertFailover(db, {
      id: rig.failover.id, tenant: 'acme', vm, kind: 'planned', pointRequest: 'latest', pointId: null, host: 'rv-host', vmGenerationId: '8f2a1c3e-1b2d-4c5e-9f00-112233445566',
      spec: {}, warnings: [], idempotencyKey: null, requestedBy: 'test', expiresAt: null,
    });
    const redis = await connectRedis(svc.ctx.config.redis.url);
    const prefix = `rvtimer${Date.now()}`;
    const queues = createFailoverQueues(redis, prefix);
    const queue = new Queue('failover-rv-host', { connection: redis, prefix });
    const rt: HostRuntime = { ctx: svc.ctx, redis, hostName: 'rv-host', dir: rig.dir, nbdSocket: '', driver, dropExport: async () => undefined, log: svc.ctx.log };
    try {
      // Not committed yet: no reverse cycle, whatever the time.
      const far = new Date(Date.now() + 86_400_000);
      expect(await reverseNotDue(rt, f, far)).toMatch(/not committed/);
      await setFailoverState(db, f.id, 'committed', { fork: rig.failover.fork });
      const last = (await lastReverseCapture(db, f))!;
      expect(last).toBeInstanceOf(Date);
      // The VM's frequency is 5m: just under 300 s after the last capture nothing is due, and a job run then does nothing.
      const early = new Date(last.getTime() + 299_000);
      expect(await reconcileReverseCycles(rt, queues, new Set(), early)).toEqual([]);
      expect(await runReverseCycleJob(rt, f.id, () => early)).toBeUndefined();
      const due = new Date(last.getTime() + 300_000);
      // A failback under way: its own final cycle closes the last log, the timer runs none.
      await insertFailback(db, { id: 'fb-rv', tenant: 'acme', vm, failoverId: f.id, host: 'rv-host', shutdownTimeoutSeconds: 1, requestedBy: 'test' });
      expect(await reverseNotDue(rt, (await getFailover(db, f.id))!, due)).toBe('a failback is under way');
      await db.query('DELETE FROM failbacks WHERE id = $1', ['fb-rv']);
      // Due: the reconciler adds the failover's job to the host's queue, unless this process runs it now.
      expect(await reconcileReverseCycles(rt, queues, new Set([f.id]), due)).toEqual([]);
      expect(await reconcileReverseCycles(rt, queues, new Set(), due)).toEqual([f.id]);
      expect((await queue.getJob(reverseCycleJobId(f.id)))?.name).toBe('reverse-cycle');

      await hmp('write -P 0xf1 2M 64k');
      await hmp('flush');
      const r = (await runReverseCycleJob(rt, f.id, () => due))!;
      expect(r.disks).toEqual([expect.objectContaining({ generation: 1, sequence: 8, kind: 'incremental', changedBytes: 64 << 10 })]);
      // Run again at the same instant (the job repeated): the new log is younger than the frequency, nothing more is shipped.
      expect(await runReverseCycleJob(rt, f.id, () => due)).toBeUndefined();
      expect((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM reverse_logs WHERE tenant = $1 AND vm = $2', ['acme', vm]))[0]!.n).toBe(8);

      // Before the agent applies it, status shows the last applied log (7) and, from the last pass, nothing pending.
      const before = await runBin('agent', ['status', '--json', '--state-dir', state.dir]);
      expect(before.code, before.stderr).toBe(0);
      type Rev = { vm: string; disks: { disk: string; generation: number; sequence: number; capturedAt: string | null; lagSeconds: number | null; receivedBytes: number; appliedBytes: number; pendingLogs: number | null }[] }[];
      const rev0 = (JSON.parse(before.stdout) as { reverse: Rev }).reverse;
      expect(rev0).toEqual([{ vm, disks: [expect.objectContaining({ disk: 'disk0', generation: 1, sequence: 7, pendingLogs: 0 })] }]);
      const received0 = rev0[0]!.disks[0]!.receivedBytes;
      expect(received0).toBeGreaterThan(0);

      const passes = await apply();
      expect(passes).toEqual([expect.objectContaining({ sequence: 8, appliedLogs: 1, pendingLogs: 0 })]);
      expect(await compare([overlay()], onPrem())).toBe('Images are identical.');
      const after = await runBin('agent', ['status', '--json', '--state-dir', state.dir]);
      expect(after.code, after.stderr).toBe(0);
      const d = (JSON.parse(after.stdout) as { reverse: Rev }).reverse[0]!.disks[0]!;
      expect(d).toMatchObject({ generation: 1, sequence: 8, capturedAt: r.capturedAt.toISOString(), pendingLogs: 0, receivedBytes: received0 + r.disks[0]!.size });
      expect(d.lagSeconds).toBeGreaterThanOrEqual(0);
      const text = await runBin('agent', ['status', '--state-dir', state.dir]);
      expect(text.code, text.stderr).toBe(0);
      expect(text.stdout).toMatch(new RegExp(`vm1: reverse .*\\n  disk0: .*onprem\\.raw: log 1/8 applied .*, captured ${r.capturedAt.toISOString().replace(/\./g, '\\.')}; lag \\d+ s; received .*; 0 log\\(s\\) pending`));
    } finally {
      await queue.obliterate({ force: true }).catch(() => undefined);
      await queue.close();
      await queues.close();
      redis.disconnect();
    }
  }, 300_000);
});
