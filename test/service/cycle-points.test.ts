/**
 * Recovery points that are one instant of a two-disk VM: logs carry the VM cycle (log format 2) and
 * the agent's capture time; one disk's merge lags; the point is cut at the cycle both disks applied,
 * the VM's merge barrier holding the other disk there, and each disk's point exports exactly as the
 * agent's disk was at that cycle. Version-1 logs still open and apply; cutPoint cuts on demand with
 * the agent's capture time; pins hold pruning back until released. Real Redis, PostgreSQL, VHDX.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pinPoint, pinnedPoints, unpinPoint } from '../../service/catalog/pins.js';
import { listVms } from '../../service/catalog/vms.js';
import type { VmRow } from '../../service/catalog/vms.js';
import { barrierKey } from '../../service/workers/barrier.js';
import { cutPoint } from '../../service/workers/cut-point.js';
import { pinnedStorage } from '../../service/workers/pinned-storage.js';
import { Pointer } from '../../service/workers/points-job.js';
import { SimAgent, scribble } from './agent-sim.js';
import type { MergeHarness } from './helpers.js';
import { enrolledAgent, mergeHarness, operator } from './helpers.js';

const MiB = 1 << 20;
const Hour = 3_600_000;
const Disks = ['d0', 'd1'] as const;
/** Before the wall clock, which an on-demand point is made at: points sort hourly, hourly, on demand. */
const t0 = Date.parse('2026-01-01T00:00:00.000Z');
/** The agent's capture time of cycle c (distinct from any service clock). */
const capturedMs = (c: number) => Date.parse('2026-12-01T00:00:00.000Z') + c * 30_000;

let h: MergeHarness;
let agent: SimAgent;
let pointer: Pointer;
let vm: VmRow;
const sources = new Map<string, Buffer>(Disks.map((d) => [d, Buffer.alloc(4 * MiB)]));
/** The agent's disks as of each cycle: reference contents by cycle, then disk. */
const refs = new Map<number, Map<string, Buffer>>();
const seqs = new Map<string, number>(Disks.map((d) => [d, 0]));

/** One agent cycle: both disks written, a log of each sealed with the cycle; `only` commits some. */
async function agentCycle(cycle: number, only: readonly string[] = Disks): Promise<void> {
  agent.cycle = { id: cycle, capturedMs: capturedMs(cycle) };
  for (const d of only) {
    const source = sources.get(d)!;
    const seq = seqs.get(d)! + 1;
    seqs.set(d, seq);
    const at = ((cycle + (d === 'd1' ? 2 : 0)) % 4) * MiB;
    await agent.commitLog(d, seq, await agent.sealed(d, 1, seq, source, scribble(source, [[at, 128 * 1024]])));
  }
  refs.set(cycle, new Map([...sources].map(([d, s]) => [d, Buffer.from(s)])));
}

const merge = (disk: string) => h.merger.mergeDisk({ tenant: 'acme', vm: 'web', disk });
const stateOf = async (d: string) => JSON.parse(await readFile(join(h.env.config.replicaRoot, 'acme', 'web', d, 'state.json'), 'utf8')) as
  { appliedCycle: number | null; appliedSequence: number; layers: string[]; points: { name: string; layer: string; cycle: number | null }[] };

/** Exports the point's disk through the operator API and returns its bytes. */
async function exported(pointId: number, disk: string): Promise<Buffer> {
  const out = join(h.env.dir, `export-${pointId}-${disk}.raw`);
  const r = await operator(h.svc, 'POST', '/v1/tenants/acme/vms/web/exports', { disk, point: String(pointId), format: 'raw', path: out });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const bytes = await readFile(out);
  await rm(out);
  return bytes;
}

beforeAll(async () => {
  h = await mergeHarness();
  agent = new SimAgent(h.svc, await enrolledAgent(h.svc, 'acme', '*', 'hv1.acme.example'), 'web');
  await agent.register(Disks.map((id) => ({ id, virtualSize: 4 * MiB })), { history: 2 });
  pointer = new Pointer(h.svc.ctx, h.redis, h.lockPrefix);
  agent.cycle = { id: 1, capturedMs: capturedMs(1) };
  for (const [d, source] of sources) await agent.commitBase(d, 1, 'full', source, [scribble(source, [[0, MiB]])]);
  refs.set(1, new Map([...sources].map(([d, s]) => [d, Buffer.from(s)])));
  await h.merger.merge();
  vm = (await listVms(h.svc.ctx.db)).find((v) => v.tenant === 'acme' && v.name === 'web')!;
});
afterAll(async () => {
  await h?.close();
});

describe('recovery points at one VM cycle', () => {
  it('records the base cycle, and cuts the hourly point at the cycle both disks applied while one lags', async () => {
    for (const d of Disks) expect((await stateOf(d)).appliedCycle).toBe(1);
    await agentCycle(2);
    await h.merger.merge();
    await agentCycle(3);
    await merge('d0'); // d1's merge lags behind: it has cycle 3 pending
    await agentCycle(4);
    expect((await stateOf('d0')).appliedCycle).toBe(3);
    expect((await stateOf('d1')).appliedCycle).toBe(2);

    // Not one cycle yet: the barrier goes up at 3 and nothing is frozen.
    expect(await pointer.points(new Date(t0))).toBe(0);
    expect(await h.redis.get(barrierKey(h.lockPrefix, 'acme', 'web'))).toBe('3');
    for (const d of Disks) expect((await stateOf(d)).points).toEqual([]);
    // Merges run: d1 catches up to 3; d0 waits at 3 although its log of cycle 4 is there.
    await h.merger.merge();
    expect((await stateOf('d0')).appliedCycle).toBe(3);
    expect((await stateOf('d1')).appliedCycle).toBe(3);

    expect(await pointer.points(new Date(t0 + 60_000))).toBe(1);
    expect(await h.redis.get(barrierKey(h.lockPrefix, 'acme', 'web'))).toBeNull();
    const [point] = await h.svc.ctx.db.query<{ id: number; cycle: number; capturedAt: Date }>(`SELECT id, cycle, captured_at AS "capturedAt" FROM recovery_points WHERE tenant = 'acme' AND vm = 'web'`);
    expect(point!.cycle).toBe(3);
    expect(new Date(point!.capturedAt).getTime()).toBe(capturedMs(3));
    for (const d of Disks) {
      expect((await stateOf(d)).points.map((p) => p.cycle)).toEqual([3]);
      expect((await exported(point!.id, d)).equals(refs.get(3)!.get(d)!), `point of ${d} at cycle 3`).toBe(true);
    }
    // The barrier is down: both disks apply cycle 4 and the latest equals the agent's disks.
    await h.merger.merge();
    for (const d of Disks) {
      expect((await stateOf(d)).appliedCycle).toBe(4);
      expect((await agent.replica(d)).equals(sources.get(d)!), `latest of ${d}`).toBe(true);
    }
    const listed = await operator<{ points: { id: string; cycle: number | null; capturedAt: string | null; latest: boolean }[] }>(h.svc, 'GET', '/v1/tenants/acme/vms/web/points');
    expect(listed.body.points.map((p) => [p.latest, p.cycle, p.capturedAt])).toEqual([
      [false, 3, new Date(capturedMs(3)).toISOString()], [true, 4, new Date(capturedMs(4)).toISOString()]]);
  });

  it('never cuts a cycle some disk missed', async () => {
    await agentCycle(5, ['d0']); // d1 failed in cycle 5: its next log carries the changes
    await agentCycle(6);
    await merge('d0');
    expect(await pointer.makePoint(vm, new Date(t0 + 2 * Hour))).toBe(false); // d0 at 6, d1 at 4 with 6 pending
    expect(await h.redis.get(barrierKey(h.lockPrefix, 'acme', 'web'))).toBe('6');
    await h.merger.merge();
    expect(await pointer.makePoint(vm, new Date(t0 + 2 * Hour))).toBe(true);
    const points = await h.svc.ctx.db.query<{ id: number; cycle: number }>(`SELECT id, cycle FROM recovery_points WHERE tenant = 'acme' AND vm = 'web' ORDER BY id`);
    expect(points.map((p) => p.cycle)).toEqual([3, 6]);
    for (const d of Disks) expect((await exported(points[1]!.id, d)).equals(refs.get(6)!.get(d)!), `point of ${d} at cycle 6`).toBe(true);
  });

  it('cuts a point on demand at the newest cycle, with the agent capture time, and reuses it', async () => {
    await agentCycle(7);
    await agentCycle(8);
    await merge('d1'); // d1 at 8, d0 still at 6 with 7 and 8 pending
    const cut = await cutPoint(h.svc.ctx, h.redis, { tenant: 'acme', vm: 'web', timeoutMs: 20_000, lockPrefix: h.lockPrefix });
    expect(cut.cycle).toBe(8);
    expect(cut.capturedAt.getTime()).toBe(capturedMs(8));
    expect(cut.consistency).toBe('crash');
    for (const d of Disks) expect((await exported(cut.id, d)).equals(refs.get(8)!.get(d)!), `on-demand point of ${d}`).toBe(true);
    const again = await cutPoint(h.svc.ctx, h.redis, { tenant: 'acme', vm: 'web', timeoutMs: 1000, lockPrefix: h.lockPrefix });
    expect(again.id).toBe(cut.id);
    expect(await h.redis.get(barrierKey(h.lockPrefix, 'acme', 'web'))).toBeNull();
    await expect(cutPoint(h.svc.ctx, h.redis, { tenant: 'acme', vm: 'nope', timeoutMs: 100, lockPrefix: h.lockPrefix })).rejects.toMatchObject({ code: 'not_found' });
  });

  it('fails on demand within the timeout when no cycle is whole, naming each disk', async () => {
    await agentCycle(9, ['d1']);
    await merge('d1'); // d1 at 9; d0 at 8 with nothing pending
    const started = Date.now();
    await expect(cutPoint(h.svc.ctx, h.redis, { tenant: 'acme', vm: 'web', timeoutMs: 300, lockPrefix: h.lockPrefix }))
      .rejects.toMatchObject({ code: 'unavailable', message: expect.stringContaining('d0 at cycle 8, d1 at cycle 9') });
    expect(Date.now() - started).toBeLessThan(5000);
    await agentCycle(10);
    await h.merger.merge();
  });

  it('keeps a pinned point and everything older through prune; unpinning lets prune proceed', async () => {
    const before = await h.svc.ctx.db.query<{ id: number; cycle: number }>(`SELECT id, cycle FROM recovery_points WHERE tenant = 'acme' AND vm = 'web' ORDER BY created_at, id`);
    expect(before.map((p) => p.cycle)).toEqual([3, 6, 8]);
    const pinned = before[1]!;
    await pinPoint(h.svc.ctx.db, pinned.id, 'failover-1');
    await pinPoint(h.svc.ctx.db, pinned.id, 'failover-1');
    await pinPoint(h.svc.ctx.db, pinned.id, 'failover-2');
    await expect(pinPoint(h.svc.ctx.db, 999_999, 'failover-1')).rejects.toMatchObject({ code: 'not_found' });
    expect((await pinnedPoints(h.svc.ctx.db, 'acme', 'web')).map((p) => [p.pointId, p.holder, p.cycle])).toEqual([[pinned.id, 'failover-1', 6], [pinned.id, 'failover-2', 6]]);

    const late = new Date(Date.now() + 100 * Hour);
    expect(await pointer.prune(late)).toBe(0);
    const kept = await h.svc.ctx.db.query<{ id: number }>(`SELECT id FROM recovery_points WHERE tenant = 'acme' AND vm = 'web' ORDER BY created_at, id`);
    expect(kept.map((p) => p.id)).toEqual(before.map((p) => p.id));
    for (const d of Disks) {
      expect((await stateOf(d)).points.map((p) => p.cycle)).toEqual([3, 6, 8]);
      expect((await exported(pinned.id, d)).equals(refs.get(6)!.get(d)!), `pinned point of ${d}`).toBe(true);
    }
    const [held] = await pinnedStorage(h.svc.ctx, { tenant: 'acme', now: late });
    expect(held).toMatchObject({ tenant: 'acme', vm: 'web', pins: 1, heldPoints: 3 });
    expect(held!.bytes).toBeGreaterThan(0);

    await unpinPoint(h.svc.ctx.db, pinned.id, 'failover-1');
    expect(await pointer.prune(late)).toBe(0); // failover-2 still holds it
    await unpinPoint(h.svc.ctx.db, pinned.id, 'failover-2');
    expect(await pinnedStorage(h.svc.ctx, { tenant: 'acme', now: late })).toEqual([]);
    expect(await pointer.prune(late)).toBe(3);
    for (const d of Disks) {
      expect((await stateOf(d)).points).toEqual([]);
      expect((await agent.replica(d)).equals(sources.get(d)!), `latest of ${d} after prune`).toBe(true);
    }
  });

  it('still opens and applies version-1 logs, each its own cycle', async () => {
    agent.cycle = undefined;
    for (const d of Disks) {
      const source = sources.get(d)!;
      const seq = seqs.get(d)! + 1;
      seqs.set(d, seq);
      const bytes = await agent.sealed(d, 1, seq, source, scribble(source, [[3 * MiB, 64 * 1024]]));
      expect(bytes.readUInt16LE(24 + 8)).toBe(1); // the header in the envelope's clear context: version 1
      await agent.commitLog(d, seq, bytes);
    }
    await h.merger.merge();
    for (const d of Disks) {
      expect(await agent.diskState(d)).toMatchObject({ state: 'replicating', pendingLogs: 0 });
      expect((await stateOf(d)).appliedCycle).toBeNull();
      expect((await agent.replica(d)).equals(sources.get(d)!)).toBe(true);
    }
    // Every disk at no cycle: the hourly point is made as before cycles, each disk as applied.
    expect(await pointer.points(new Date(t0 + 200 * Hour))).toBe(1);
    const [point] = await h.svc.ctx.db.query<{ id: number; cycle: number | null }>(`SELECT id, cycle FROM recovery_points WHERE tenant = 'acme' AND vm = 'web'`);
    expect(point!.cycle).toBeNull();
    for (const d of Disks) expect((await exported(point!.id, d)).equals(sources.get(d)!)).toBe(true);
  });

  it('holds a full base back while a point of the VM is pinned, so the pinned layers stay', async () => {
    const [point] = await h.svc.ctx.db.query<{ id: number }>(`SELECT id FROM recovery_points WHERE tenant = 'acme' AND vm = 'web'`);
    await pinPoint(h.svc.ctx.db, point!.id, 'failover-3');
    const before = await stateOf('d0');
    const source = sources.get('d0')!;
    agent.cycle = { id: 20, capturedMs: capturedMs(20) };
    scribble(source, [[0, MiB]]);
    await agent.commitBase('d0', 2, 'full', source, [[{ offset: 0, length: source.length, kind: 'data' }]]);
    await h.merger.merge();
    expect(await stateOf('d0')).toMatchObject({ layers: before.layers, points: before.points });
    for (const d of Disks) expect((await exported(point!.id, d)).length).toBe(4 * MiB);
    await unpinPoint(h.svc.ctx.db, point!.id, 'failover-3');
    await h.merger.merge();
    const after = await stateOf('d0');
    expect(after).toMatchObject({ layers: ['base-g2.vhdx'], points: [], appliedCycle: 20 });
    expect((await agent.replica('d0')).equals(source)).toBe(true);
  });

  it('holds a base read over several cycles at no cycle until the next log', async () => {
    const duo = new SimAgent(h.svc, await enrolledAgent(h.svc, 'gamma', '*', 'hv3.gamma.example'), 'duo');
    await duo.register([{ id: 'd0', virtualSize: 2 * MiB }]);
    const source = Buffer.alloc(2 * MiB);
    const chunks = [scribble(source, [[0, 4096]]), scribble(source, [[MiB, 4096]])];
    for (const [index, ext] of chunks.entries()) {
      duo.cycle = { id: 30 + index, capturedMs: capturedMs(30 + index) }; // the base yielded to other disks for a cycle
      const obj = await duo.upload('d0', { kind: 'chunk', generation: 1, index }, await duo.sealed('d0', 1, index, source, ext, 'full'));
      expect((await duo.call('POST', '/v1/vms/duo/disks/d0/chunks', { generation: 1, index, ...obj })).status).toBe(202);
    }
    expect((await duo.call('POST', '/v1/vms/duo/disks/d0/initial', { generation: 1, mode: 'full', chunkCount: 2, consistency: 'crash', createdAt: new Date().toISOString() })).status).toBe(202);
    await h.merger.merge();
    const dir = join(h.env.config.replicaRoot, 'gamma', 'duo', 'd0');
    const applied = async () => (JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as { appliedCycle: number | null }).appliedCycle;
    expect(await applied()).toBeNull();
    duo.cycle = { id: 32, capturedMs: capturedMs(32) };
    await duo.commitLog('d0', 1, await duo.sealed('d0', 1, 1, source, scribble(source, [[4096, 4096]])));
    await h.merger.merge();
    expect(await applied()).toBe(32);
    expect((await duo.replica('d0')).equals(source)).toBe(true);
  });

  it('refuses a log whose header names another cycle than its commit', async () => {
    const other = new SimAgent(h.svc, await enrolledAgent(h.svc, 'beta', '*', 'hv2.beta.example'), 'solo');
    await other.register([{ id: 'd0', virtualSize: MiB }]);
    const source = Buffer.alloc(MiB);
    other.cycle = { id: 5, capturedMs: capturedMs(5) };
    await other.commitBase('d0', 1, 'full', source, [scribble(source, [[0, 4096]])]);
    const bytes = await other.sealed('d0', 1, 1, source, scribble(source, [[8192, 4096]]));
    other.cycle = { id: 6, capturedMs: capturedMs(6) };
    const committed = await other.commitLog('d0', 1, bytes);
    await h.merger.merge();
    const state = await other.diskState('d0');
    expect(state).toMatchObject({ state: 'resync_required' });
    expect(String(state.resyncReason)).toContain('log is cycle 5, expected cycle 6: replayed under another name');

    // A commit names both the cycle and its capture time or neither; a repeat naming another cycle is refused.
    const obj = await other.upload('d0', { kind: 'log', generation: 1, sequence: 2 }, bytes);
    const half = await other.call('POST', '/v1/vms/solo/disks/d0/commits', { generation: 1, sequence: 2, ...obj, consistency: 'crash', cycle: 7 });
    expect(half.status).toBe(400);
    expect(half.body.error?.message).toMatch(/cycle and capturedAt come together/);
    const { status: _s, ...first } = committed;
    const repeat = await other.call('POST', '/v1/vms/solo/disks/d0/commits', { generation: 1, sequence: 1, ...first, consistency: 'crash', cycle: 7, capturedAt: new Date().toISOString() });
    expect(repeat.status).toBe(409);
    expect(repeat.body.error?.reason).toBe('commit_differs');
  });
});
