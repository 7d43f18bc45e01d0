/**
 * Usage events from real state changes (migration 012's triggers) on both catalog implementations:
 * a scripted day of catalog rows, each change with its own timestamp, metered exactly; what was open
 * before the range comes in; a deleted VM, failover or mapping closes its interval.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { Db } from '../catalog/db.js';
import { migrate } from '../catalog/migrate.js';
import { openPg } from '../catalog/pg.js';
import { openPglite } from '../catalog/pglite.js';
import { recordReplicaBytes, usageEvents } from '../catalog/usage.js';
import { usageCsv, usageDays, usageReport } from './report.js';

const TestPgUrl = process.env.LIFEBOAT_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';

async function scriptedDay(db: Db): Promise<void> {
  await migrate(db);
  await db.query(`INSERT INTO tenants (name, replica_public_jwk, replica_private_wrapped) VALUES ('acme', '{}', 'x'), ('globex', '{}', 'x')`);
  const auth = (await db.query<{ id: number }>(`INSERT INTO authorizations (tenant, pattern, storage, trust_group) VALUES ('acme', '*', '/s', 'g') RETURNING id`))[0]!.id;
  const vm = (name: string, at: string) => db.query(`INSERT INTO vms (tenant, name, server_fqdn, authorization_id, trust_group, storage_dir, frequency_seconds, history,
    app_consistent_every, compression, created_at) VALUES ('acme', $1, 'h', $2, 'g', '/s', 30, 4, 0, 'none', $3)`, [name, auth, at]);
  await vm('web', '2026-03-09T18:00:00Z');
  await vm('db', '2026-03-10T06:00:00Z');
  await db.query(`INSERT INTO disks (tenant, vm, id, virtual_size, source_format, replica_dir) VALUES ('acme', 'web', 'd0', 1048576, 'vhdx', '/r')`);
  const log = (seq: number, size: number, at: string) => db.query(`INSERT INTO logs (tenant, vm, disk, kind, generation, sequence, key, size, sha256, consistency, created_at, committed_at)
    VALUES ('acme', 'web', 'd0', 'log', 1, $1, 'k', $2, 's', 'crash', $3, $3)`, [seq, size, at]);
  await log(1, 1000, '2026-03-10T01:00:00Z');
  await log(2, 2345, '2026-03-10T23:59:59.999Z');
  await log(3, 7, '2026-03-11T00:00:00Z');
  await recordReplicaBytes(db, 'acme', new Date('2026-03-10T00:00:00Z'), 1e9);
  await recordReplicaBytes(db, 'acme', new Date('2026-03-10T12:00:00Z'), 3e9);
  const failover = (id: string, kind: string, hw: object, plan: string | null) => db.query(`INSERT INTO failovers (id, tenant, vm, kind, state, goal, point_request, vm_generation_id,
    requested_by, spec, plan_run_id, requested_at) VALUES ($1, 'acme', 'web', $2, 'requested', 'ready', 'latest', gen_random_uuid(), 'op', $3, $4, '2026-03-10T09:00:00Z')`,
  [id, kind, JSON.stringify({ hardware: hw }), plan]);
  await failover('fo-t', 'test', { cpus: 2, memoryMiB: 4096, guestOs: 'windows' }, 'pr-1');
  await failover('fo-u', 'unplanned', { cpus: 4, memoryMiB: 2048, guestOs: 'linux' }, 'pr-1');
  await db.query(`UPDATE failovers SET state = 'preparing', started_at = '2026-03-10T10:00:00Z' WHERE id = 'fo-t'`);
  await db.query(`INSERT INTO public_ip_pools (name) VALUES ('p')`);
  await db.query(`INSERT INTO public_ips (address, pool, tenant, position) VALUES ('203.0.113.7', 'p', 'acme', 0)`);
  await db.query(`INSERT INTO failover_public_ips (failover_id, address, dr_address, allow, applied_at) VALUES ('fo-t', '203.0.113.7', '10.0.0.5', '{}', '2026-03-10T10:05:00Z')`);
  await db.query(`UPDATE failover_public_ips SET removed_at = '2026-03-10T11:00:00Z' WHERE failover_id = 'fo-t'`);
  await db.query(`UPDATE failovers SET state = 'stopped', ended_at = '2026-03-10T12:30:00Z' WHERE id = 'fo-t'`);
  await db.query(`UPDATE vms SET protected = false, updated_at = '2026-03-10T18:00:00Z' WHERE name = 'db'`);
  await db.query(`UPDATE failovers SET state = 'preparing', started_at = '2026-03-10T22:00:00Z' WHERE id = 'fo-u'`);
  await db.query(`UPDATE failovers SET state = 'reverted', ended_at = '2026-03-11T02:00:00Z' WHERE id = 'fo-u'`);
}

async function exercise(db: Db): Promise<void> {
  await scriptedDay(db);
  const day = { from: new Date('2026-03-10T00:00:00Z'), to: new Date('2026-03-11T00:00:00Z') };
  const later = new Date('2026-04-01T00:00:00Z');
  const report = await usageReport(db, day, later);
  expect(report.tenants).toEqual([{
    tenant: 'acme',
    days: [{ day: '2026-03-10', protectedVmHours: 36, replicaGbHours: 48, bytesReceived: 3345, testFailoverVmHours: 2.5, failoverVmHours: 2, vcpuHours: 13, memoryGibHours: 14,
      windowsVmHours: 2.5, publicIpHours: 0.916667, planRuns: 1 }],
    total: { protectedVmHours: 36, replicaGbHours: 48, bytesReceived: 3345, testFailoverVmHours: 2.5, failoverVmHours: 2, vcpuHours: 13, memoryGibHours: 14,
      windowsVmHours: 2.5, publicIpHours: 0.916667, planRuns: 1 },
  }]);
  // Two days metered together are the two days metered alone.
  const two = await usageDays(db, { from: new Date('2026-03-10T00:00:00Z'), to: new Date('2026-03-12T00:00:00Z') }, later);
  const next = await usageDays(db, { from: new Date('2026-03-11T00:00:00Z'), to: new Date('2026-03-12T00:00:00Z') }, later);
  expect(two).toEqual([...(await usageDays(db, day, later)), ...next]);
  expect(usageCsv(next)).toBe('tenant,day,protectedVmHours,replicaGbHours,bytesReceived,testFailoverVmHours,failoverVmHours,vcpuHours,memoryGibHours,windowsVmHours,publicIpHours,planRuns\n'
    + 'acme,2026-03-11,24.000000,72.000000,7,0.000000,2.000000,8.000000,4.000000,0.000000,0.000000,0\n');
  // One tenant's report has only that tenant's usage.
  expect((await usageReport(db, { ...day, tenant: 'globex' }, later)).tenants).toEqual([]);

  // Deleting the VM ends its protection (and the failover that cascades with it) now.
  const before = Date.now();
  await db.query(`UPDATE failovers SET ended_at = NULL WHERE id = 'fo-u'`);
  await db.query(`DELETE FROM vms WHERE name = 'web'`);
  const ends = (await usageEvents(db, { from: new Date(before - 60_000), to: new Date(Date.now() + 60_000) })).filter((e) => e.at.getTime() >= before - 60_000);
  expect(ends.map((e) => [e.kind, e.subject]).sort()).toEqual([['failover_ended', 'fo-u'], ['vm_unprotected', 'web']]);
}

describe('usage events', () => {
  it('meters a scripted day of catalog changes on PGlite', async () => {
    const db = await openPglite('memory://');
    try {
      await exercise(db);
    } finally {
      await db.close();
    }
  });

  it('meters the same day on the PostgreSQL server', async () => {
    const schema = `u_${randomBytes(6).toString('hex')}`;
    const db = await openPg(TestPgUrl, schema);
    try {
      await exercise(db);
    } finally {
      await db.close();
      const c = new pg.Client({ connectionString: TestPgUrl });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c.end();
    }
  });
});
