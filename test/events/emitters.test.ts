/**
 * The emitters wired into the service, on a real catalog (PostgreSQL) with an injected clock: the
 * replication monitor reports a VM's health changes and a disk's resync once each; the certificate
 * monitor warns once about a live agent certificate near its end and not about one replaced,
 * revoked or far from it; every failover step is an event; and a subscription gets what it asked for.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertFailover } from '../../service/catalog/failovers.js';
import { insertServerCert } from '../../service/catalog/servers.js';
import { insertDisk, insertVm, setDiskState } from '../../service/catalog/vms.js';
import { listDeliveries, listEvents } from '../../service/catalog/webhooks.js';
import type { ServiceContext } from '../../service/context.js';
import { openContext } from '../../service/context.js';
import { EventRetentionMs, emitEvent, pruneOldEvents } from '../../service/events/emit.js';
import { createSubscription } from '../../service/events/subscriptions.js';
import { addStep } from '../../service/failover/steps.js';
import { reportReplicationEvents } from '../../service/replication/health-events.js';
import { reportExpiringCertificates } from '../../service/trust/expiry-events.js';
import type { TestEnv } from '../service/helpers.js';
import { testEnv } from '../service/helpers.js';

let env: TestEnv;
let ctx: ServiceContext;
const Hour = 3_600_000;
const Day = 24 * Hour;

beforeAll(async () => {
  env = await testEnv();
  ctx = await openContext(env.config);
  await ctx.db.query(`INSERT INTO tenants (name, replica_public_jwk, replica_private_wrapped) VALUES ('acme', '{}', 'unused')`);
  const [auth] = await ctx.db.query<{ id: number }>(`INSERT INTO authorizations (tenant, pattern, storage, trust_group) VALUES ('acme', '*.acme.com', '/srv/r', 'g') RETURNING id`);
  await insertVm(ctx.db, { tenant: 'acme', name: 'db01', displayName: null, serverFqdn: 'hv1.acme.com', authorizationId: auth!.id, trustGroup: 'g', storageDir: '/srv/r/db01', frequencySeconds: 300, history: 4, appConsistentEvery: 0, compression: 'lz4' });
  await insertDisk(ctx.db, { tenant: 'acme', vm: 'db01', id: 'disk0', virtualSize: 1 << 20, sourceFormat: 'vhdx', replicaDir: '/srv/r/db01/disk0' });
}, 60_000);

afterAll(async () => {
  await ctx?.close();
  await env?.cleanup();
});

const events = async (type: string) => (await listEvents(ctx.db, { tenant: 'acme', type, limit: 100 })).reverse();

describe('event emitters', () => {
  it('reports a VM\'s health changes and a disk\'s resync once each', async () => {
    const t0 = Date.now();
    const state = { generation: 1, baseComplete: true, appliedSequence: 5, state: 'replicating' as const, resyncReason: null, lastAppliedAt: new Date(t0) };
    await setDiskState(ctx.db, 'acme', 'db01', 'disk0', state);
    // Normal at first: nothing to report (a VM first seen counts as normal).
    expect(await reportReplicationEvents(ctx.db, new Date(t0 + 60_000))).toBe(0);
    // Nothing applied for over an hour: warning, reported once.
    expect(await reportReplicationEvents(ctx.db, new Date(t0 + 2 * Hour))).toBe(1);
    expect(await reportReplicationEvents(ctx.db, new Date(t0 + 2 * Hour + 60_000))).toBe(0);
    // A resync: critical, and the resync itself.
    await setDiskState(ctx.db, 'acme', 'db01', 'disk0', { ...state, state: 'resync_required', resyncReason: 'log 0000000000000006: a gap after 5', lastAppliedAt: null });
    expect(await reportReplicationEvents(ctx.db, new Date(t0 + 3 * Hour))).toBe(2);
    expect(await reportReplicationEvents(ctx.db, new Date(t0 + 3 * Hour + 60_000))).toBe(0);
    // Back to replicating and fresh: normal again; a later resync is a new event.
    await setDiskState(ctx.db, 'acme', 'db01', 'disk0', { ...state, generation: 2, lastAppliedAt: new Date(t0 + 4 * Hour) });
    expect(await reportReplicationEvents(ctx.db, new Date(t0 + 4 * Hour + 60_000))).toBe(1);
    await setDiskState(ctx.db, 'acme', 'db01', 'disk0', { ...state, generation: 2, state: 'resync_required', resyncReason: 'log 0000000000000006: a gap after 5', lastAppliedAt: null });
    expect(await reportReplicationEvents(ctx.db, new Date(t0 + 4 * Hour + 120_000))).toBe(2);

    const health = await events('replication.health_changed');
    expect(health.map((e) => [e.data.from, e.data.to])).toEqual([['normal', 'warning'], ['warning', 'critical'], ['critical', 'normal'], ['normal', 'critical']]);
    expect(health[1]!.data).toMatchObject({ vm: 'db01', state: 'resync_required', lastError: 'log 0000000000000006: a gap after 5' });
    expect(health[0]!.createdAt.getTime()).toBe(t0 + 2 * Hour);
    const resync = await events('replication.resync_required');
    expect(resync.map((e) => e.data)).toEqual([
      { vm: 'db01', disk: 'disk0', generation: 1, reason: 'log 0000000000000006: a gap after 5' },
      { vm: 'db01', disk: 'disk0', generation: 2, reason: 'log 0000000000000006: a gap after 5' },
    ]);
    await setDiskState(ctx.db, 'acme', 'db01', 'disk0', { ...state, generation: 3 });
  });

  it('warns once about a live agent certificate near its end, not one replaced, revoked or far from it', async () => {
    const now = new Date('2026-06-10T00:00:00Z');
    const cert = (serial: string, fqdn: string, daysLeft: number, validDays = 30) => insertServerCert(ctx.db, {
      serial, tenant: 'acme', fqdn, notBefore: new Date(now.getTime() - (validDays - daysLeft) * Day), notAfter: new Date(now.getTime() + daysLeft * Day),
    });
    await cert('a1', 'hv1.acme.com', 5);
    await cert('b1', 'hv2.acme.com', 5);
    await cert('b2', 'hv2.acme.com', 25);
    await cert('c1', 'hv3.acme.com', 12);
    await cert('d1', 'hv4.acme.com', 2);
    await ctx.db.query(`UPDATE servers SET revoked_at = now() WHERE serial = 'd1'`);
    // A one-day certificate is warned about in its last quarter only, not from its start.
    await cert('e1', 'hv5.acme.com', 0.5, 1);

    expect(await reportExpiringCertificates(ctx.db, now)).toBe(1);
    expect(await reportExpiringCertificates(ctx.db, new Date(now.getTime() + Hour))).toBe(0);
    expect((await events('certificate.expiring')).map((e) => e.data)).toEqual([{ server: 'hv1.acme.com', serial: 'a1', notAfter: new Date(now.getTime() + 5 * Day).toISOString(), daysLeft: 5 }]);
    expect(await reportExpiringCertificates(ctx.db, new Date(now.getTime() + 6 * Hour + 1000))).toBe(1);
    expect((await events('certificate.expiring')).at(-1)!.data).toMatchObject({ server: 'hv5.acme.com', daysLeft: 0 });
  });

  it('reports every failover step, and delivers it to a subscription that asked for it', async () => {
    const { subscription } = await createSubscription(ctx.db, ctx.masterKey, { tenant: 'acme', url: 'https://hooks.acme.example/', types: ['failover.step_changed'], createdBy: 'test' });
    const id = `fo-${randomUUID()}`;
    await ctx.db.transaction(async (tx) => {
      await insertFailover(tx, { id, tenant: 'acme', vm: 'db01', kind: 'test', pointRequest: 'latest', pointId: null, host: null, vmGenerationId: randomUUID(), spec: {} as never, warnings: [], idempotencyKey: null, requestedBy: 'test', expiresAt: null });
      await addStep(tx, id, 'requested', 'done', 'test failover from point latest', 'tenant-admin:alice');
    });
    await addStep(ctx.db, id, 'prepare', 'started');
    const steps = (await events('failover.step_changed')).filter((e) => e.data.failover === id);
    expect(steps.map((e) => e.data)).toEqual([
      { failover: id, vm: 'db01', kind: 'test', state: 'requested', goal: 'ready', step: 'requested', status: 'done', detail: 'test failover from point latest', cause: 'tenant-admin:alice' },
      { failover: id, vm: 'db01', kind: 'test', state: 'requested', goal: 'ready', step: 'prepare', status: 'started', detail: null },
    ]);
    expect((await listDeliveries(ctx.db, { subscriptionId: subscription.id, limit: 10 })).map((d) => d.eventId).sort()).toEqual(steps.map((e) => e.id).sort());
    // Health events are not what it asked for.
    expect(await listDeliveries(ctx.db, { subscriptionId: subscription.id, limit: 10 })).toHaveLength(2);
  });

  it('keeps events for the retention, and longer while a delivery of theirs is pending', async () => {
    const { subscription } = await createSubscription(ctx.db, ctx.masterKey, { tenant: 'acme', url: 'https://hooks.acme.example/q', types: ['quota.reached'], createdBy: 'test' });
    const at = new Date('2026-01-01T00:00:00Z');
    const pending = await emitEvent(ctx.db, { type: 'quota.reached', tenant: 'acme', at, data: { quota: 'replicaGb' } });
    const ended = await emitEvent(ctx.db, { type: 'quota.reached', tenant: 'acme', at, data: { quota: 'protectedVms' } });
    await ctx.db.query(`UPDATE webhook_deliveries SET status = 'succeeded' WHERE id = $1`, [ended.deliveries[0]]);
    const kept = await emitEvent(ctx.db, { type: 'quota.reached', tenant: 'acme', at: new Date(at.getTime() + 20 * Day), data: {} });
    expect(await pruneOldEvents(ctx.db, new Date(at.getTime() + EventRetentionMs - 1000))).toBe(0);
    expect(await pruneOldEvents(ctx.db, new Date(at.getTime() + EventRetentionMs + 1000))).toBe(1);
    expect((await listDeliveries(ctx.db, { subscriptionId: subscription.id, limit: 10 })).map((d) => d.id).sort()).toEqual([...pending.deliveries, ...kept.deliveries].sort());
  });
});
