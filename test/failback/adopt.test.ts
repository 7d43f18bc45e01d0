/**
 * Forward replication after failback without a new initial copy, with the real service (PostgreSQL
 * catalog, Redis locks, VHDX replicas), the agent's engine and merges: the hoster's disk (a qcow2 the
 * VM wrote at the hoster) becomes the replica in a new generation with no points; the agent, whose
 * disk was brought equal to the hoster's (here by qemu-io writing the same blocks: a stand-in for
 * reverse replication's apply, which is not on main yet), sends a delta base of nothing but digests,
 * then ships only the next cycle's change; the replica equals the agent's disk (qemu-img compare).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adoptHosterDisks, FailbackReason } from '../../service/failback/adopt.js';
import { readState } from '../../service/replication/replica.js';
import { listDisks } from '../../service/catalog/vms.js';
import { referee } from '../helpers.js';
import { FailoverScenario } from '../failover/failover-harness.js';

const MiB = 1 << 20;
const DiskMiB = 64;
let s: FailoverScenario;
let source: string;

/** qemu-io writes of pattern p at each offset (MiB), len MiB each, into image of format fmt. */
async function write(image: string, fmt: string, at: number[], len: number, p: number): Promise<void> {
  await referee('qemu-io', ['-f', fmt, ...at.flatMap((o) => ['-c', `write -P ${p} ${o * MiB} ${len * MiB}`]), image]);
}

beforeAll(async () => {
  s = await FailoverScenario.start();
  source = join(s.env.dir, 'web1.raw');
  await referee('qemu-img', ['create', '-q', '-f', 'raw', source, `${DiskMiB}M`]);
  await write(source, 'raw', [0, 8, 16, 24, 32, 40, 48, 56], 4, 0x11);
}, 180_000);

afterAll(async () => {
  await s?.stop();
}, 120_000);

describe('failback: the hoster\'s disk becomes the replica', () => {
  it('resumes forward replication with a delta, not a full base, and points start fresh', async () => {
    await s.protect('web1', [source]);
    const first = await s.replicate();
    expect(first[0]!.baseBytes).toBe(DiskMiB * MiB);
    await s.replicate();
    const [disk] = await listDisks(s.svc.ctx.db, 'acme', 'web1');
    const before = await readState(disk!.replicaDir);

    // The VM ran at the hoster and wrote 3 MiB: its disk there is a qcow2 holding the whole disk.
    const hoster = join(s.env.dir, 'hoster.qcow2');
    await referee('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', source, hoster]);
    await write(hoster, 'qcow2', [2, 20, 61], 1, 0x5a);
    // Reverse replication brings the same blocks to the tenant's disk (stand-in, see the header).
    await write(source, 'raw', [2, 20, 61], 1, 0x5a);

    const adopted = await adoptHosterDisks(s.svc.ctx, 'acme', 'web1', [{ id: 'disk0', image: hoster }], { redis: s.redis });
    expect(adopted).toMatchObject([{ id: 'disk0', generation: before.generation + 1, adopted: true }]);
    const state = await readState(disk!.replicaDir);
    expect(state).toMatchObject({ generation: before.generation + 1, state: 'resync_required', resyncReason: FailbackReason, baseComplete: true, points: [], layers: [adopted[0]!.layer] });
    expect((await s.svc.ctx.db.query('SELECT id FROM recovery_points WHERE tenant = $1 AND vm = $2', ['acme', 'web1'])).length).toBe(0);
    await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', join(disk!.replicaDir, adopted[0]!.layer), source]);
    // A retry finds it done.
    expect((await adoptHosterDisks(s.svc.ctx, 'acme', 'web1', [{ id: 'disk0', image: hoster }], { redis: s.redis }))[0]!.adopted).toBe(false);

    // The agent's next cycle: a delta base against the replica's digests; no block differs.
    const resync = await s.replicate();
    const sent = resync[0]!.stats!.sentBytes;
    console.log(`failback delta base: ${sent} bytes sent for a ${DiskMiB} MiB disk`);
    expect(sent).toBeLessThan(DiskMiB * MiB / 100);
    const after = await readState(disk!.replicaDir);
    expect(after).toMatchObject({ state: 'replicating', baseComplete: true });
    expect(after.generation).toBeGreaterThan(state.generation);

    // Then only what changes: 2 MiB written, a log of about 2 MiB.
    await write(source, 'raw', [10, 44], 1, 0x77);
    const next = await s.replicate();
    const stats = next[0]!.stats!;
    console.log(`first cycle after failback: ${stats.changedBytes} bytes changed, ${stats.sentBytes} sent`);
    expect(next[0]!.baseBytes ?? 0).toBe(0);
    expect(stats.changedBytes).toBe(2 * MiB);
    expect(stats.sentBytes).toBeLessThan(2.2 * MiB);
    const top = (await readState(disk!.replicaDir)).layers;
    expect(top).toEqual([adopted[0]!.layer]);
    await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', join(disk!.replicaDir, top[0]!), source]);
  }, 600_000);
});
