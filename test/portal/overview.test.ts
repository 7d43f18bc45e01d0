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

  it('shows none of another tenant\'s VMs', async () => {
    await world.vm('globex', 'g1');
    expect((await tenantOverview(world.svc.ctx.db, 'acme')).map((o) => o.name)).toEqual(['a1', 'a2', 'a3']);
    expect((await tenantOverview(world.svc.ctx.db, 'globex')).map((o) => o.name)).toEqual(['g1']);
  });
});
