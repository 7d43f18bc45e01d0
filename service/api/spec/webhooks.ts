/** Webhook subscriptions, their deliveries and attempts, and events (service/api/webhooks.ts; docs/webhooks.md). */
import { z } from 'zod';
import { attemptsQuery, deliveriesQuery, eventsQuery, hosterEventsQuery, hosterListQuery, tenantListQuery, webhookChangeSchema, webhookCreateSchema } from '../webhooks.js';
import { deleted, etag, page, time } from './common.js';
import type { RouteDoc } from './registry.js';

const tag = 'webhooks';
const id = z.string().regex(/^whs_[A-Za-z0-9_-]{1,40}$/);
const delivery = z.string().regex(/^msg_[A-Za-z0-9_-]{1,40}$/);
const subscription = z.object({
  id: z.string(), tenant: z.string().nullable(), url: z.string(), description: z.string(), types: z.array(z.string()), enabled: z.boolean(),
  disabledReason: z.string().nullable(), failingSince: time().nullable(), createdBy: z.string(), createdAt: time(), updatedAt: time(), ...etag,
});
const deliveryOut = z.object({
  id: z.string(), subscription: z.string(), event: z.string(), type: z.string().optional(), tenant: z.string().nullable(), status: z.enum(['pending', 'succeeded', 'failed']),
  attempts: z.number().int(), nextAttemptAt: time().nullable(), lastStatus: z.number().int().nullable(), lastError: z.string().nullable(), createdAt: time(), endedAt: time().nullable(),
});
const attempt = z.object({ attempt: z.number().int(), startedAt: time(), latencyMs: z.number(), ok: z.boolean(), status: z.number().int().nullable(), error: z.string().nullable(), response: z.string() });
const event = z.object({ id: z.string(), type: z.string(), timestamp: time(), tenant: z.string().nullable(), data: z.record(z.string(), z.unknown()) });

/** The webhook routes under a base: a tenant's, or the hoster-wide ones. */
function webhookPaths(base: string, list: z.ZodObject): RouteDoc[] {
  const params = { id, delivery };
  return [
    { method: 'post', path: `${base}/webhooks`, tag, body: webhookCreateSchema, summary: 'subscribe a URL to events (types: event types or "*"); the answer holds the secret (whsec_…), shown only here', ok: { 201: subscription.safeExtend({ secret: z.string() }) } },
    { method: 'get', path: `${base}/webhooks`, tag, query: list, summary: 'webhook subscriptions', ok: { 200: z.object({ webhooks: z.array(subscription), ...page }) } },
    { method: 'get', path: `${base}/webhooks/{id}`, tag, params, summary: 'one subscription', ok: { 200: subscription } },
    { method: 'patch', path: `${base}/webhooks/{id}`, tag, params, body: webhookChangeSchema, ifMatch: true, summary: 'change a subscription; enabled: true re-enables a disabled one; rotateSecret: a new secret, shown once', ok: { 200: subscription.safeExtend({ secret: z.string().optional() }) } },
    { method: 'delete', path: `${base}/webhooks/{id}`, tag, params, ifMatch: true, summary: 'delete a subscription and its deliveries', ok: { 200: deleted('subscription') } },
    { method: 'post', path: `${base}/webhooks/{id}/test`, tag, params, errors: [409], summary: 'send a webhook.test event to this subscription only', ok: { 202: z.object({ event: z.string(), delivery: z.string() }) } },
    { method: 'get', path: `${base}/webhooks/{id}/deliveries`, tag, params, query: deliveriesQuery, summary: 'the subscription\'s deliveries, newest first', ok: { 200: z.object({ deliveries: z.array(deliveryOut), ...page }) } },
    { method: 'get', path: `${base}/webhooks/{id}/deliveries/{delivery}`, tag, params, summary: 'one delivery with its payload and attempts', ok: { 200: deliveryOut.safeExtend({ payload: event, attemptLog: z.array(attempt), ...etag }) } },
    { method: 'get', path: `${base}/webhooks/{id}/deliveries/{delivery}/attempts`, tag, params, query: attemptsQuery, summary: 'a delivery\'s attempts', ok: { 200: z.object({ attempts: z.array(attempt), ...page }) } },
    { method: 'post', path: `${base}/webhooks/{id}/deliveries/{delivery}/redeliver`, tag, params, errors: [409], summary: 'send an ended delivery again (same webhook-id, the retry schedule from the start)', ok: { 202: deliveryOut.safeExtend(etag) } },
  ];
}

export const webhookRoutes: RouteDoc[] = [
  ...webhookPaths('/v1/tenants/{tenant}', tenantListQuery),
  ...webhookPaths('/v1', hosterListQuery),
  { method: 'get', path: '/v1/tenants/{tenant}/events', tag: 'events', query: eventsQuery, summary: 'the tenant\'s events, newest first', ok: { 200: z.object({ events: z.array(event), ...page }) } },
  { method: 'get', path: '/v1/events', tag: 'events', query: hosterEventsQuery, summary: 'every event, newest first', ok: { 200: z.object({ events: z.array(event), ...page }) } },
];
