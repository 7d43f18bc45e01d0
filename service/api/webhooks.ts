/**
 * Webhook routes of the API (docs/webhooks.md): subscriptions, their deliveries and attempts,
 * redelivery, a test event, and the events themselves. The same routes twice:
 *
 *   /v1/tenants/{t}/webhooks…   a tenant's subscriptions; another tenant's subscription or delivery answers 404
 *   /v1/webhooks…               hoster roles only: POST makes a hoster-wide subscription (every tenant's
 *                               events and the hoster-wide ones); GET lists all (?tenant=, ?scope=hoster)
 *
 * Access (service/trust/roles.ts): reads need read; creating, changing and deleting a subscription
 * need administer (hoster-admin, hoster-operator, tenant-admin); a test event and a redelivery need
 * operate (those and tenant-operator).
 *
 *   POST   …/webhooks                          {url, types?, description?, secret?} → 201, with the secret (shown once)
 *   GET    …/webhooks                          the subscriptions
 *   GET    …/webhooks/{id}                     one
 *   PATCH  …/webhooks/{id}                     {url?, types?, description?, enabled?, rotateSecret?} (a rotation returns the new secret once)
 *   DELETE …/webhooks/{id}                     → {deleted}, with its deliveries
 *   POST   …/webhooks/{id}/test                a webhook.test event to this subscription only → 202 {event, delivery}
 *   GET    …/webhooks/{id}/deliveries          ?status=pending|succeeded|failed&limit=
 *   GET    …/webhooks/{id}/deliveries/{d}      the delivery with its event and attempts
 *   GET    …/webhooks/{id}/deliveries/{d}/attempts
 *   POST   …/webhooks/{id}/deliveries/{d}/redeliver   an ended delivery again (same webhook-id) → 202
 *   GET    /v1/tenants/{t}/events, /v1/events  the events (newest first; ?type=&limit=)
 */
import type { Context } from 'hono';
import { Hono } from 'hono';
import { z } from 'zod';
import type { SubscriptionRow } from '../catalog/webhooks.js';
import { getDelivery, getEvent, listAttempts, listDeliveries, listEvents, listSubscriptions, getSubscription } from '../catalog/webhooks.js';
import type { ServiceContext } from '../context.js';
import { ErrNotFoundHere } from '../errors.js';
import { changeSubscription, createSubscription, MaxUrlLength, presentAttempt, presentDelivery, presentEvent, presentSubscription, redeliver, removeSubscription, sendTestEvent } from '../events/subscriptions.js';
import { AllTypes, EventTypes } from '../events/types.js';
import { check, pathId, readJson } from '../http/json.js';
import type { ApiClaims } from '../trust/tokens.js';
import type { Principal } from '../trust/roles.js';
import { mayAdminister, mayOperate, mayRead } from '../trust/roles.js';

type Env = { Variables: { operator: ApiClaims } };
/** One of the access checks of trust/roles.ts. */
type Check = (claims: Principal, tenant: string | undefined) => string | undefined;

const typesSchema = z.array(z.string().min(1).max(64)).min(1).max(EventTypes.length + 1);

export const webhookCreateSchema = z.strictObject({
  url: z.string().min(1).max(MaxUrlLength),
  types: typesSchema.default([AllTypes]),
  description: z.string().max(500).optional(),
  secret: z.string().min(1).max(200).optional(),
});

export const webhookChangeSchema = z.strictObject({
  url: z.string().min(1).max(MaxUrlLength).optional(),
  types: typesSchema.optional(),
  description: z.string().max(500).optional(),
  enabled: z.boolean().optional(),
  rotateSecret: z.boolean().optional(),
});

export const deliveriesQuery = z.strictObject({ status: z.enum(['pending', 'succeeded', 'failed']).optional(), limit: z.coerce.number().int().min(1).max(1000).default(100) });
export const eventsQuery = z.strictObject({ type: z.enum(EventTypes).optional(), limit: z.coerce.number().int().min(1).max(1000).default(100) });
export const hosterListQuery = z.strictObject({ tenant: z.string().max(64).optional(), scope: z.enum(['hoster']).optional() });

/** Who a request acts for: a tenant (its subscriptions only) or the hoster (all). */
type Scope = { tenant: string } | { hoster: true };

export function webhookRoutes(ctx: ServiceContext): Hono<Env> {
  const r = new Hono<Env>();
  const who = (c: Context<Env>) => `${c.get('operator').role}:${c.get('operator').sub}`;
  const publicOnly = (tenant: string | null) => tenant !== null && !ctx.config.webhooks.allowPrivateTargets;
  // A tenant's routes check the tenant in the path; the hoster-wide ones check with no tenant (tenant roles: 403).
  const tenantScope = (check: Check) => (c: Context<Env>): Scope => ({ tenant: check(c.get('operator'), pathId(c, 'tenant'))! });
  const hosterScope = (check: Check) => (c: Context<Env>): Scope => {
    check(c.get('operator'), undefined);
    return { hoster: true };
  };
  const subOf = async (c: Context<Env>, scope: Scope): Promise<SubscriptionRow> => {
    const id = c.req.param('id') ?? '';
    const s = /^whs_[A-Za-z0-9_-]{1,40}$/.test(id) ? await getSubscription(ctx.db, id) : undefined;
    if (!s || ('tenant' in scope && s.tenant !== scope.tenant)) throw ErrNotFoundHere(`no webhook subscription ${id.slice(0, 60)}`);
    return s;
  };
  const deliveryOf = async (c: Context<Env>, sub: SubscriptionRow) => {
    const id = c.req.param('delivery') ?? '';
    const d = /^msg_[A-Za-z0-9_-]{1,40}$/.test(id) ? await getDelivery(ctx.db, id) : undefined;
    if (!d || d.subscriptionId !== sub.id) throw ErrNotFoundHere(`subscription ${sub.id} has no delivery ${id.slice(0, 60)}`);
    return d;
  };

  type Scoped = (c: Context<Env>) => Scope;
  /** read: GETs; administer: the subscription's configuration; operate: a test event, a redelivery. */
  const mount = (base: string, read: Scoped, administer: Scoped, operate: Scoped) => {
    r.post(base, async (c) => {
      const scope = administer(c);
      const body = await readJson(c, webhookCreateSchema);
      const tenant = 'tenant' in scope ? scope.tenant : null;
      const { subscription, secret } = await createSubscription(ctx.db, ctx.masterKey, { tenant, ...body, createdBy: who(c), publicOnly: publicOnly(tenant) });
      return c.json({ ...presentSubscription(subscription), secret }, 201);
    });
    r.get(base, async (c) => {
      const scope = read(c);
      if ('tenant' in scope) return c.json({ webhooks: (await listSubscriptions(ctx.db, scope.tenant)).map(presentSubscription) });
      const q = check(hosterListQuery, c.req.query(), 'query');
      return c.json({ webhooks: (await listSubscriptions(ctx.db, q.scope === 'hoster' ? null : q.tenant)).map(presentSubscription) });
    });
    r.get(`${base}/:id`, async (c) => c.json(presentSubscription(await subOf(c, read(c)))));
    r.patch(`${base}/:id`, async (c) => {
      const sub = await subOf(c, administer(c));
      const { subscription, secret } = await changeSubscription(ctx.db, ctx.masterKey, sub, await readJson(c, webhookChangeSchema), publicOnly(sub.tenant));
      return c.json({ ...presentSubscription(subscription), ...(secret ? { secret } : {}) });
    });
    r.delete(`${base}/:id`, async (c) => {
      const { id } = await subOf(c, administer(c));
      await removeSubscription(ctx.db, id);
      return c.json({ deleted: id });
    });
    r.post(`${base}/:id/test`, async (c) => {
      const sub = await subOf(c, operate(c));
      const { eventId, deliveryId } = await sendTestEvent(ctx.db, sub, who(c));
      return c.json({ event: eventId, delivery: deliveryId }, 202);
    });
    r.get(`${base}/:id/deliveries`, async (c) => {
      const sub = await subOf(c, read(c));
      const q = check(deliveriesQuery, c.req.query(), 'query');
      return c.json({ deliveries: (await listDeliveries(ctx.db, { subscriptionId: sub.id, status: q.status, limit: q.limit })).map((d) => presentDelivery(d)) });
    });
    r.get(`${base}/:id/deliveries/:delivery`, async (c) => {
      const d = await deliveryOf(c, await subOf(c, read(c)));
      const event = (await getEvent(ctx.db, d.eventId))!;
      return c.json({ ...presentDelivery(d, event), payload: presentEvent(event), attemptLog: (await listAttempts(ctx.db, d.id)).map(presentAttempt) });
    });
    r.get(`${base}/:id/deliveries/:delivery/attempts`, async (c) => {
      const d = await deliveryOf(c, await subOf(c, read(c)));
      return c.json({ attempts: (await listAttempts(ctx.db, d.id)).map(presentAttempt) });
    });
    r.post(`${base}/:id/deliveries/:delivery/redeliver`, async (c) => {
      const sub = await subOf(c, operate(c));
      const d = await deliveryOf(c, sub);
      return c.json(presentDelivery(await redeliver(ctx.db, sub, d.id)), 202);
    });
  };
  mount('/tenants/:tenant/webhooks', tenantScope(mayRead), tenantScope(mayAdminister), tenantScope(mayOperate));
  mount('/webhooks', hosterScope(mayRead), hosterScope(mayAdminister), hosterScope(mayOperate));

  r.get('/tenants/:tenant/events', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    const q = check(eventsQuery, c.req.query(), 'query');
    return c.json({ events: (await listEvents(ctx.db, { tenant, type: q.type, limit: q.limit })).map(presentEvent) });
  });
  r.get('/events', async (c) => {
    mayRead(c.get('operator'), undefined);
    const q = check(eventsQuery.extend({ tenant: z.string().max(64).optional() }), c.req.query(), 'query');
    return c.json({ events: (await listEvents(ctx.db, { tenant: q.tenant, type: q.type, limit: q.limit })).map(presentEvent) });
  });
  return r;
}
