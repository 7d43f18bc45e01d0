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
import { ifMatch, single, withEtag } from './etag.js';
import type { Paging } from './lists.js';
import { cursorKey, ErrBadCursor, listQuery, msOf, pageOf, pageOfRows, timeRange } from './lists.js';
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

export const deliveriesQuery = listQuery({ status: z.enum(['pending', 'succeeded', 'failed']).optional(), ...timeRange });
export const attemptsQuery = listQuery({});
export const eventsQuery = listQuery({ type: z.enum(EventTypes).optional(), ...timeRange });
export const hosterEventsQuery = eventsQuery.extend({ tenant: z.string().max(64).optional() });
const enabledFilter = { enabled: z.enum(['true', 'false']).optional().describe('true: only enabled subscriptions; false: only disabled ones') };
export const tenantListQuery = listQuery(enabledFilter);
export const hosterListQuery = listQuery({ tenant: z.string().max(64).optional(), scope: z.enum(['hoster']).optional().describe('hoster: only the hoster-wide subscriptions'), ...enabledFilter });

/** The catalog's page of a newest-first list: the cursor's position, one row more than the page. */
function newestFirstPage(c: Context, q: Paging & { from?: string | undefined; to?: string | undefined }) {
  const after = cursorKey(c, q);
  if (after !== undefined && (typeof after[0] !== 'number' || typeof after[1] !== 'string')) throw ErrBadCursor();
  return {
    from: q.from === undefined ? undefined : new Date(q.from), to: q.to === undefined ? undefined : new Date(q.to),
    after: after && { us: after[0] as number, id: after[1] as string }, limit: q.limit + 1,
  };
}
const positionOf = (row: { keyUs: number; id: string }) => [row.keyUs, row.id];

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

  /** A change of one subscription waits for its lock and checks If-Match against what it is now (another scope's: none). */
  const unchanged = (c: Context<Env>, scope: Scope) => ifMatch(c, ctx.db, `webhook:${c.req.param('id') ?? ''}`, async () => {
    const now = await subOf(c, scope).catch(() => undefined);
    return now && presentSubscription(now);
  });

  type Scoped = (c: Context<Env>) => Scope;
  /** read: GETs; administer: the subscription's configuration; operate: a test event, a redelivery. */
  const mount = (base: string, read: Scoped, administer: Scoped, operate: Scoped) => {
    r.post(base, async (c) => {
      const scope = administer(c);
      const body = await readJson(c, webhookCreateSchema);
      const tenant = 'tenant' in scope ? scope.tenant : null;
      const { subscription, secret } = await createSubscription(ctx.db, ctx.masterKey, { tenant, ...body, createdBy: who(c), publicOnly: publicOnly(tenant) });
      return single(c, presentSubscription(subscription), 201, { secret });
    });
    r.get(base, async (c) => {
      const scope = read(c);
      const q = 'tenant' in scope ? { ...check(tenantListQuery, c.req.query(), 'query'), scope: undefined, tenant: undefined } : check(hosterListQuery, c.req.query(), 'query');
      const rows = await listSubscriptions(ctx.db, 'tenant' in scope ? scope.tenant : q.scope === 'hoster' ? null : q.tenant);
      const page = pageOf(c, q, rows.map(presentSubscription), { key: (s) => [msOf(s.createdAt!), s.id], match: { enabled: (s) => s.enabled } });
      return c.json({ webhooks: page.items.map(withEtag), nextCursor: page.nextCursor });
    });
    r.get(`${base}/:id`, async (c) => single(c, presentSubscription(await subOf(c, read(c)))));
    r.patch(`${base}/:id`, async (c) => {
      const scope = administer(c);
      const body = await readJson(c, webhookChangeSchema);
      await unchanged(c, scope);
      const sub = await subOf(c, scope);
      const { subscription, secret } = await changeSubscription(ctx.db, ctx.masterKey, sub, body, publicOnly(sub.tenant));
      return single(c, presentSubscription(subscription), 200, secret ? { secret } : {});
    });
    r.delete(`${base}/:id`, async (c) => {
      const scope = administer(c);
      await unchanged(c, scope);
      const { id } = await subOf(c, scope);
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
      const page = pageOfRows(c, q, await listDeliveries(ctx.db, { subscriptionId: sub.id, status: q.status, ...newestFirstPage(c, q) }), positionOf);
      return c.json({ deliveries: page.items.map((d) => presentDelivery(d)), nextCursor: page.nextCursor });
    });
    r.get(`${base}/:id/deliveries/:delivery`, async (c) => {
      const d = await deliveryOf(c, await subOf(c, read(c)));
      const event = (await getEvent(ctx.db, d.eventId))!;
      return single(c, { ...presentDelivery(d, event), payload: presentEvent(event), attemptLog: (await listAttempts(ctx.db, d.id)).map(presentAttempt) });
    });
    r.get(`${base}/:id/deliveries/:delivery/attempts`, async (c) => {
      const d = await deliveryOf(c, await subOf(c, read(c)));
      const page = pageOf(c, check(attemptsQuery, c.req.query(), 'query'), (await listAttempts(ctx.db, d.id)).map(presentAttempt), { key: (a) => [a.attempt] });
      return c.json({ attempts: page.items, nextCursor: page.nextCursor });
    });
    r.post(`${base}/:id/deliveries/:delivery/redeliver`, async (c) => {
      const sub = await subOf(c, operate(c));
      const d = await deliveryOf(c, sub);
      return single(c, presentDelivery(await redeliver(ctx.db, sub, d.id)), 202);
    });
  };
  mount('/tenants/:tenant/webhooks', tenantScope(mayRead), tenantScope(mayAdminister), tenantScope(mayOperate));
  mount('/webhooks', hosterScope(mayRead), hosterScope(mayAdminister), hosterScope(mayOperate));

  r.get('/tenants/:tenant/events', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    const q = check(eventsQuery, c.req.query(), 'query');
    const page = pageOfRows(c, q, await listEvents(ctx.db, { tenant, type: q.type, ...newestFirstPage(c, q) }), positionOf);
    return c.json({ events: page.items.map(presentEvent), nextCursor: page.nextCursor });
  });
  r.get('/events', async (c) => {
    mayRead(c.get('operator'), undefined);
    const q = check(hosterEventsQuery, c.req.query(), 'query');
    const page = pageOfRows(c, q, await listEvents(ctx.db, { tenant: q.tenant, type: q.type, ...newestFirstPage(c, q) }), positionOf);
    return c.json({ events: page.items.map(presentEvent), nextCursor: page.nextCursor });
  });
  return r;
}
