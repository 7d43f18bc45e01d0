/**
 * The dashboard's overview (service/replication/overview.ts) against the VM status document it
 * summarises: the same health, state, cycles, last applied time and pending work for every VM, at
 * several instants, read in one catalog query whatever the number of VMs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../service/catalog/db.js';
import { listVms } from '../../service/catalog/vms.js';
import { tenantOverview } from '../../service/replication/overview.js';
import { vmStatus } from '../../service/replication/status.js';
import type { PortalWorld } from './harness.js';
import { portalWorld } from './harness.js';

let world: PortalWorld;

beforeAll(async () => {
  world = await portalWorld();
  const a = await world.vm('acme', 'a1');
  await world.vm('acme', 'a2');
  for (let i = 0; i < 3; i++) await a.ship();
  // A third VM whose disk needs resynchronization, with a log left pending.
  const c = await world.vm('acme', 'a3');
  await c.agent.commitLog('d0', 1, Buffer.from('not a log'));
  await world.svc.ctx.db.query(`UPDATE disks SET state = 'resync_required', resync_reason = 'test' WHERE tenant = 'acme' AND vm = 'a3'`);
}, 180_000);
afterAll(async () => {
  await world?.close();
});

function counting(db: Db): { db: Db; queries: () => number } {
  let n = 0;
  return { db: { ...db, query: (sql: string, params?: unknown[]) => (n++, db.query(sql, params)) } as Db, queries: () => n };
}

describe('tenant overview', () => {
  it('agrees with each VM\'s status document, in one query', async () => {
    const { db } = world.svc.ctx;
    for (const offset of [0, 10 * 60_000, 2 * 3_600_000]) {
      const now = new Date(Date.now() + offset);
      const c = counting(db);
      const overview = await tenantOverview(c.db, 'acme', now);
      expect(c.queries()).toBe(1);
      const expected = await Promise.all((await listVms(db, 'acme')).map(async (v) => {
        const s = await vmStatus(db, v, now);
        return { name: v.name, health: s.health, state: s.state, cycles: s.cycles, lastAppliedAt: s.lastAppliedAt, pendingLogs: s.pendingLogs, pendingBytes: s.pendingBytes };
      }));
      expect(overview.map((o) => ({ name: o.name, health: o.health, state: o.state, cycles: o.cycles, lastAppliedAt: o.lastAppliedAt, pendingLogs: o.pendingLogs, pendingBytes: o.pendingBytes }))).toEqual(expected);
    }
    const health = Object.fromEntries((await tenantOverview(db, 'acme')).map((o) => [o.name, o.health]));
    expect(health).toEqual({ a1: 'normal', a2: 'normal', a3: 'critical' });
    expect(Object.fromEntries((await tenantOverview(db, 'acme', new Date(Date.now() + 2 * 3_600_000))).map((o) => [o.name, o.health]))).toEqual({ a1: 'warning', a2: 'warning', a3: 'critical' });
  });

  it('counts an hour of cycles from logs at known instants, in the overview and the status document alike', async () => {
    // A generation of 130 logs closed every 30 s up to 10 s before \`now\` (an instant of its own, clear
    // of the logs the other tests ship): the last 120 were closed within the hour. Ten minutes later
    // only 100 were, and the 20 cycles since are missed.
    const { db } = world.svc.ctx;
    await world.vm('acme', 'span');
    const now = new Date(Date.UTC(2031, 0, 1, 12, 0, 0));
    const [generation] = (await db.query<{ generation: number }>(`SELECT generation FROM disks WHERE tenant = 'acme' AND vm = 'span'`)).map((r) => Number(r.generation));
    await db.query(
      `INSERT INTO logs (tenant, vm, disk, kind, generation, sequence, key, size, sha256, consistency, created_at, committed_at, applied_at, status)
       SELECT 'acme', 'span', 'd0', 'log', $1, s, 'span/' || s, 100, 'x', 'crash', $2::timestamptz - ((130 - s) * 30 + 10) * interval '1 second',
              $2::timestamptz - ((130 - s) * 30 + 9) * interval '1 second', $2::timestamptz - ((130 - s) * 30 + 8) * interval '1 second', 'applied'
       FROM generate_series(1, 130) s`, [generation, now]);
    const vm = (await listVms(db, 'acme')).find((v) => v.name === 'span')!;
    for (const [at, cycles] of [[now, { expected: 120, successful: 120, missed: 0 }], [new Date(now.getTime() + 10 * 60_000), { expected: 120, successful: 100, missed: 20 }]] as const) {
      expect((await tenantOverview(db, 'acme', at)).find((o) => o.name === 'span')!.cycles).toEqual(cycles);
      expect((await vmStatus(db, vm, at)).cycles).toEqual(cycles);
    }
  });

  it('shows none of another tenant\'s VMs', async () => {
    await world.vm('globex', 'g1');
    expect((await tenantOverview(world.svc.ctx.db, 'acme')).map((o) => o.name)).toEqual(['a1', 'a2', 'a3', 'span']);
    expect((await tenantOverview(world.svc.ctx.db, 'globex')).map((o) => o.name)).toEqual(['g1']);
  });
});
