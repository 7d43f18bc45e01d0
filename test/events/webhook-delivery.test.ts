/**
 * Webhook delivery with a real catalog (PostgreSQL), a real queue (Redis, a prefix of its own) and
 * real receivers on loopback that check signatures with their own code: a delivery end to end through
 * the worker; the filter (tenant, type, opt-in); the retry schedule read from the queued jobs' delays
 * under an injected clock (no sleeping); timeouts, redirects and huge answers; recovery; redelivery;
 * a subscription failing for a day being disabled, with the event that says so; and the outbox
 * queueing again what Redis lost.
 */
import { randomBytes } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { getDelivery, getSubscription, listAttempts, listDeliveries, listEvents } from '../../service/catalog/webhooks.js';
import type { ServiceContext } from '../../service/context.js';
import { openContext } from '../../service/context.js';
import { Deliverer, DisableAfterMs, OverdueMs, RetryDelaysMs } from '../../service/events/deliver.js';
import { emitEvent } from '../../service/events/emit.js';
import { MaxExcerptBytes } from '../../service/events/post.js';
import type { WebhookJob } from '../../service/events/queue.js';
import { createWebhookQueue, webhookJobId } from '../../service/events/queue.js';
import { changeSubscription, createSubscription, redeliver } from '../../service/events/subscriptions.js';
import { startWebhookWorker } from '../../service/events/worker.js';
import { connectRedis } from '../../service/queue.js';
import { until } from '../helpers.js';
import type { TestEnv } from '../service/helpers.js';
import { testEnv, TestRedisUrl } from '../service/helpers.js';
import { Receiver, verifyStandardWebhook } from './receiver.js';

let env: TestEnv;
let ctx: ServiceContext;
let redis: Redis;
const receivers: Receiver[] = [];

beforeAll(async () => {
  // The receivers are on loopback: tenants' subscriptions may reach them here (the default refuses, tested below).
  env = await testEnv((f) => {
    f.webhooks = { allowPrivateTargets: true };
  });
  ctx = await openContext(env.config);
  redis = await connectRedis(TestRedisUrl);
  for (const t of ['acme', 'globex']) await ctx.db.query(`INSERT INTO tenants (name, replica_public_jwk, replica_private_wrapped) VALUES ($1, '{}', 'unused')`, [t]);
}, 60_000);

afterAll(async () => {
  for (const r of receivers) await r.stop();
  redis?.disconnect();
  await ctx?.close();
  await env?.cleanup();
});

async function receiver(): Promise<{ r: Receiver; url: string }> {
  const r = new Receiver();
  receivers.push(r);
  return { r, url: await r.start() };
}

async function subscribe(url: string, r: Receiver, tenant: string | null, types = ['*']) {
  const { subscription, secret } = await createSubscription(ctx.db, ctx.masterKey, { tenant, url, types, createdBy: 'test' });
  r.secret = secret;
  return subscription;
}

/** A queue under a prefix of its own, so no other test's worker takes these jobs. */
function privateQueue(): { queue: Queue<WebhookJob>; prefix: string } {
  const prefix = `lbtest-${randomBytes(4).toString('hex')}`;
  return { queue: createWebhookQueue(redis, prefix), prefix };
}

describe('webhook delivery', () => {
  beforeEach(async () => {
    // Each test starts with no subscription, so events of one do not fan out to another's.
    await ctx.db.query('DELETE FROM webhook_subscriptions');
  });

  it('delivers an event through the queue and worker, signed so that an independent receiver verifies it, to the subscriptions that see it', async () => {
    const { r: acme, url: acmeUrl } = await receiver();
    const { r: hoster, url: hosterUrl } = await receiver();
    const { r: points, url: pointsUrl } = await receiver();
    const sub = await subscribe(acmeUrl, acme, 'acme');
    await subscribe(hosterUrl, hoster, null);
    await subscribe(pointsUrl, points, 'acme', ['point.created']);
    const { queue, prefix } = privateQueue();
    const workerConnection = await connectRedis(TestRedisUrl);
    const worker = await startWebhookWorker(ctx, redis, workerConnection, { prefix, sweepMs: 100 });
    try {
      const e = await emitEvent(ctx.db, { type: 'failover.step_changed', tenant: 'acme', data: { failover: 'fo-1', step: 'prepare', status: 'done' } });
      await emitEvent(ctx.db, { type: 'failover.step_changed', tenant: 'globex', data: { failover: 'fo-2' } });
      await emitEvent(ctx.db, { type: 'point.created', tenant: 'acme', data: { vm: 'db01', point: 7 } });
      await until(async () => (await listDeliveries(ctx.db, { status: 'pending', limit: 1 })).length === 0 && acme.received.length >= 1, 'the deliveries');
      // acme's '*' subscription: its own tenant's step, not globex's, not the opt-in point.created.
      expect(acme.received.map((x) => x.payload.type)).toEqual(['failover.step_changed']);
      const got = acme.received[0]!;
      expect(got.verified).toBe(true);
      expect(got.payload).toMatchObject({ id: e.id, type: 'failover.step_changed', tenant: 'acme', data: { failover: 'fo-1', step: 'prepare', status: 'done' } });
      expect(got.headers['content-type']).toBe('application/json');
      expect(String(got.headers['webhook-id'])).toMatch(/^msg_/);
      expect(Math.abs(Number(got.headers['webhook-timestamp']) - Date.now() / 1000)).toBeLessThan(300);
      // The hoster-wide one sees every tenant's events; point.created only where named.
      expect(hoster.received.map((x) => x.payload.tenant).sort()).toEqual(['acme', 'globex']);
      expect(points.received.map((x) => x.payload.type)).toEqual(['point.created']);
      expect([...hoster.received, ...points.received].every((x) => x.verified)).toBe(true);
      // The receiver's check is a real one: under another secret, or with a byte of the body changed, it fails.
      expect(verifyStandardWebhook(`whsec_${randomBytes(32).toString('base64')}`, got.headers, got.body)).toBe(false);
      expect(verifyStandardWebhook(acme.secret, got.headers, got.body.replace('fo-1', 'fo-9'))).toBe(false);
      const d = (await listDeliveries(ctx.db, { subscriptionId: sub.id, limit: 10 }))[0]!;
      expect(d).toMatchObject({ id: got.headers['webhook-id'], status: 'succeeded', attempts: 1 });
      const [attempt] = await listAttempts(ctx.db, d.id);
      expect(attempt).toMatchObject({ attempt: 1, ok: true, status: 204, error: null });
      expect(attempt!.latencyMs).toBeGreaterThanOrEqual(0);
    } finally {
      await worker.stop();
      workerConnection.disconnect();
      await queue.obliterate({ force: true });
    }
  }, 60_000);

  it('retries on the exponential schedule over more than a day, logs every attempt, and disables a subscription failing for a day with an event saying so', async () => {
    const { r: failing, url: failingUrl } = await receiver();
    const { r: watcher, url: watcherUrl } = await receiver();
    failing.mode = 'fail';
    const sub = await subscribe(failingUrl, failing, 'acme');
    await subscribe(watcherUrl, watcher, null, ['webhook.subscription_disabled']);
    const { queue } = privateQueue();
    let now = new Date('2026-03-01T00:00:00Z');
    const deliverer = new Deliverer(ctx, queue, { now: () => now });
    const { deliveries: [id] } = await emitEvent(ctx.db, { type: 'replication.health_changed', tenant: 'acme', at: now, data: { vm: 'db01', from: 'normal', to: 'critical' } });
    const { deliveries: [other] } = await emitEvent(ctx.db, { type: 'replication.resync_required', tenant: 'acme', at: now, data: { vm: 'db01', disk: 'disk0' } });
    expect(await deliverer.sweep()).toBe(2);
    expect((await queue.getJob(webhookJobId(id!, 0)))!.opts.delay).toBe(0);

    const delays: number[] = [];
    const outcomes: string[] = [];
    for (let attempt = 0; ; attempt++) {
      const outcome = await deliverer.deliver({ id: id!, attempt });
      outcomes.push(outcome);
      if (outcome !== 'retrying') break;
      const job = await queue.getJob(webhookJobId(id!, attempt + 1));
      delays.push(job!.opts.delay!);
      now = new Date(now.getTime() + job!.opts.delay!);
    }
    // ×3 from 10 s, capped at 6 h; the 12th attempt comes 27 h after the first, past the day, and disables.
    expect(delays).toEqual(RetryDelaysMs);
    expect(delays.reduce((a, b) => a + b, 0)).toBeGreaterThan(DisableAfterMs);
    expect(outcomes.at(-1)).toBe('disabled');
    const attempts = await listAttempts(ctx.db, id!);
    expect(attempts.map((a) => a.attempt)).toEqual(Array.from({ length: RetryDelaysMs.length + 1 }, (_, i) => i + 1));
    expect(attempts.every((a) => !a.ok && a.status === 500 && a.error === 'HTTP 500')).toBe(true);
    expect(attempts[0]!.responseExcerpt).toMatch(/^receiver broken: x+$/);
    expect(Buffer.byteLength(attempts[0]!.responseExcerpt)).toBeLessThanOrEqual(MaxExcerptBytes);
    expect(attempts.at(-1)!.startedAt.getTime() - attempts[0]!.startedAt.getTime()).toBe(delays.reduce((a, b) => a + b, 0));
    expect(failing.received.every((x) => x.verified && x.headers['webhook-id'] === id)).toBe(true);
    expect(new Set(failing.received.map((x) => x.headers['webhook-timestamp'])).size).toBe(failing.received.length);

    const after = (await getSubscription(ctx.db, sub.id))!;
    expect(after.enabled).toBe(false);
    expect(after.disabledReason).toMatch(/^every attempt failed since 2026-03-01T00:00:00\.000Z; last: HTTP 500/);
    expect(await getDelivery(ctx.db, id!)).toMatchObject({ status: 'failed', attempts: 12 });
    // The other pending delivery of the disabled subscription ends without another attempt.
    expect(await getDelivery(ctx.db, other!)).toMatchObject({ status: 'failed', attempts: 0, lastError: 'subscription disabled' });
    const [disabled] = await listEvents(ctx.db, { tenant: 'acme', type: 'webhook.subscription_disabled', limit: 5 });
    expect(disabled!.data).toMatchObject({ subscription: sub.id, url: failingUrl, failingSince: '2026-03-01T00:00:00.000Z', lastError: 'HTTP 500' });
    // The hoster-wide watcher gets that event.
    expect(await deliverer.sweep()).toBe(1);
    const [watch] = await listDeliveries(ctx.db, { subscriptionId: (await ctx.db.query<{ id: string }>('SELECT id FROM webhook_subscriptions WHERE tenant IS NULL'))[0]!.id, limit: 5 });
    expect(await deliverer.deliver({ id: watch!.id, attempt: 0 })).toBe('succeeded');
    expect(watcher.received[0]!.payload).toMatchObject({ type: 'webhook.subscription_disabled', tenant: 'acme', data: { subscription: sub.id } });
    expect(watcher.received[0]!.verified).toBe(true);

    // Disabled: a redelivery is refused until it is enabled again, which forgets the failures.
    await expect(redeliver(ctx.db, after, id!, now)).rejects.toThrow(/is disabled; enable it first/);
    const { subscription: enabled } = await changeSubscription(ctx.db, ctx.masterKey, after, { enabled: true });
    expect(enabled).toMatchObject({ enabled: true, disabledReason: null, failingSince: null });
    await queue.obliterate({ force: true });
  }, 120_000);

  it('times an attempt out, refuses to follow a redirect, and recovers with the same webhook-id when the receiver does', async () => {
    const { r, url } = await receiver();
    const { r: elsewhere, url: elsewhereUrl } = await receiver();
    const sub = await subscribe(url, r, 'acme');
    const { queue } = privateQueue();
    let now = new Date('2026-04-01T00:00:00Z');
    const deliverer = new Deliverer(ctx, queue, { now: () => now, timeoutMs: 300 });
    const { deliveries: [id] } = await emitEvent(ctx.db, { type: 'certificate.expiring', tenant: 'acme', at: now, data: { server: 'hv1.acme.com' } });

    r.mode = 'hang';
    expect(await deliverer.deliver({ id: id!, attempt: 0 })).toBe('retrying');
    r.mode = 'redirect';
    r.redirectTo = elsewhereUrl;
    now = new Date(now.getTime() + RetryDelaysMs[0]!);
    expect(await deliverer.deliver({ id: id!, attempt: 1 })).toBe('retrying');
    r.mode = 'ok';
    now = new Date(now.getTime() + RetryDelaysMs[1]!);
    // A duplicate job of an attempt already made does nothing.
    expect(await deliverer.deliver({ id: id!, attempt: 1 })).toBe('skipped');
    expect(await deliverer.deliver({ id: id!, attempt: 2 })).toBe('succeeded');

    const attempts = await listAttempts(ctx.db, id!);
    expect(attempts.map((a) => [a.ok, a.status])).toEqual([[false, null], [false, 302], [true, 204]]);
    expect(attempts[0]!.error).toBe('no answer within 300 ms');
    expect(attempts[1]!.error).toBe(`redirect to ${elsewhereUrl} not followed (give the final URL)`);
    expect(elsewhere.received).toHaveLength(0);
    expect(new Set(r.received.map((x) => x.headers['webhook-id']))).toEqual(new Set([id]));
    expect(r.received.every((x) => x.verified)).toBe(true);
    // A success clears the failure record.
    expect((await getSubscription(ctx.db, sub.id))!.failingSince).toBeNull();

    // Redelivery: pending again under the same id, the schedule from its start, attempts numbered on.
    await expect(redeliver(ctx.db, sub, 'msg_nope', now)).rejects.toThrow(/no delivery msg_nope/);
    const again = await redeliver(ctx.db, sub, id!, now);
    expect(again).toMatchObject({ status: 'pending', attempts: 3, runStart: 3 });
    await expect(redeliver(ctx.db, sub, id!, now)).rejects.toThrow(/still pending/);
    r.mode = 'fail';
    expect(await deliverer.deliver({ id: id!, attempt: 3 })).toBe('retrying');
    expect((await queue.getJob(webhookJobId(id!, 4)))!.opts.delay).toBe(RetryDelaysMs[0]);
    r.mode = 'ok';
    expect(await deliverer.deliver({ id: id!, attempt: 4 })).toBe('succeeded');
    expect((await listAttempts(ctx.db, id!)).map((a) => a.attempt)).toEqual([1, 2, 3, 4, 5]);
    expect(r.received.at(-1)!.headers['webhook-id']).toBe(id);
    await queue.obliterate({ force: true });
  }, 60_000);

  it('lets a tenant\'s receiver reach public addresses only, by literal or by name, unless the config allows more', async () => {
    const { r, url } = await receiver();
    const byName = url.replace('127.0.0.1', 'localhost');
    const tenantSub = await subscribe(url, r, 'acme');
    const tenantByName = await subscribe(byName, r, 'acme');
    const hosterSub = await subscribe(url, r, null);
    const { queue } = privateQueue();
    const deliverer = new Deliverer(ctx, queue);
    ctx.config.webhooks.allowPrivateTargets = false;
    try {
      await emitEvent(ctx.db, { type: 'quota.reached', tenant: 'acme', data: { quota: 'protectedVms' } });
      const [toTenant] = await listDeliveries(ctx.db, { subscriptionId: tenantSub.id, limit: 1 });
      const [toTenantByName] = await listDeliveries(ctx.db, { subscriptionId: tenantByName.id, limit: 1 });
      const [toHoster] = await listDeliveries(ctx.db, { subscriptionId: hosterSub.id, limit: 1 });
      expect(await deliverer.deliver({ id: toTenant!.id, attempt: 0 })).toBe('retrying');
      expect(await deliverer.deliver({ id: toTenantByName!.id, attempt: 0 })).toBe('retrying');
      expect((await listAttempts(ctx.db, toTenant!.id))[0]!.error).toBe('EPRIVATE: 127.0.0.1 is a loopback address; this receiver may reach public addresses only');
      expect((await listAttempts(ctx.db, toTenantByName!.id))[0]!.error).toMatch(/^EPRIVATE: localhost: (127\.0\.0\.1|::1) is a loopback address; this receiver may reach public addresses only$/);
      expect(r.received).toHaveLength(0);
      // The hoster's own subscription may reach its own network.
      expect(await deliverer.deliver({ id: toHoster!.id, attempt: 0 })).toBe('succeeded');
      expect(r.received).toHaveLength(1);
    } finally {
      ctx.config.webhooks.allowPrivateTargets = true;
      await queue.obliterate({ force: true });
    }
  });

  it('keeps what Redis lost in the catalog and queues it again once overdue', async () => {
    const { r, url } = await receiver();
    await subscribe(url, r, 'globex');
    const { queue } = privateQueue();
    let now = new Date('2026-05-01T00:00:00Z');
    const deliverer = new Deliverer(ctx, queue, { now: () => now });
    const { deliveries: [id] } = await emitEvent(ctx.db, { type: 'quota.reached', tenant: 'globex', at: now, data: { quota: 'protectedVms', limit: 2, used: 2 } });
    expect(await deliverer.sweep()).toBe(1);
    expect(await deliverer.sweep()).toBe(0);
    await queue.obliterate({ force: true });
    expect(await queue.getJob(webhookJobId(id!, 0))).toBeUndefined();
    now = new Date(now.getTime() + OverdueMs + 1000);
    expect(await deliverer.sweep()).toBe(1);
    expect(await queue.getJob(webhookJobId(id!, 0))).toBeDefined();
    expect(await deliverer.deliver({ id: id!, attempt: 0 })).toBe('succeeded');
    expect(r.received[0]!.verified).toBe(true);
    await queue.obliterate({ force: true });
  }, 60_000);
});
