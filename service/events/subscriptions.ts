/**
 * Subscription commands (the API and through it the CLI call these): create, change, delete, send
 * a test event, redeliver; and the presenters that turn rows into JSON. Who may act on which
 * subscription is the caller's check (service/api/webhooks.ts): a tenant's subscription belongs to
 * its tenant, a hoster-wide one (tenant null) to the hoster.
 *
 * URLs: https, or http to a loopback address only (a receiver on the service's own host), no
 * credentials in the URL (the requests are signed); a tenant's receiver must be a public address
 * (checkReceiverUrl, and post.ts at each attempt) unless the hoster's config allows more. Secrets are `whsec_` + 32 random bytes unless
 * the caller gives one; returned once, by create and by a rotation, never by a read.
 */
import { randomBytes } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import { ErrInvalidArgument, LifeboatError } from '../../shared/errors.js';
import { newMessageId, newSecret, parseSecret } from '../../shared/protocol/standard-webhooks.js';
import type { AttemptRow, DeliveryRow, EventRow, SubscriptionRow } from '../catalog/webhooks.js';
import { deleteSubscription, getDelivery, insertDelivery, insertEvent, insertSubscription, restartDelivery, updateSubscription } from '../catalog/webhooks.js';
import type { Db } from '../catalog/db.js';
import { ErrConflict } from '../errors.js';
import { newEventId } from './emit.js';
import { nonPublic } from './post.js';
import { sealSecret } from './secrets.js';
import { AllTypes, TestEventType, isEventType } from './types.js';

export const MaxUrlLength = 2048;

export function newSubscriptionId(): string {
  return `whs_${randomBytes(12).toString('base64url')}`;
}

/**
 * Checks a receiver URL (see the header); returns it normalised. publicOnly (a tenant's receiver,
 * unless config webhooks.allowPrivateTargets): no loopback, private or link-local address literal and
 * no localhost; names are checked again at each attempt, when they are resolved (post.ts).
 */
export function checkReceiverUrl(text: string, publicOnly = false): string {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw ErrInvalidArgument(`url: ${JSON.stringify(text.slice(0, 100))} is not a URL`);
  }
  if (u.username || u.password) throw ErrInvalidArgument('url: credentials in the URL are not allowed (deliveries are signed)');
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (publicOnly) {
    const why = host === 'localhost' ? 'localhost is the service\'s own host' : nonPublic(host);
    if (why) throw ErrInvalidArgument(`url: ${why}; a tenant's receiver must be a public address`);
  }
  if (u.protocol === 'https:') return u.toString();
  const loopback = host === 'localhost' || (ipaddr.isValid(host) && ipaddr.process(host).range() === 'loopback');
  if (u.protocol === 'http:' && loopback) return u.toString();
  throw ErrInvalidArgument(`url: ${u.protocol}// is allowed only to a loopback address; use https`);
}

/** Checks an event-type filter: '*' or known types, no repeats. */
export function checkTypes(types: string[]): string[] {
  for (const t of types) if (t !== AllTypes && (!isEventType(t) || t === TestEventType)) throw ErrInvalidArgument(`types: no event type ${JSON.stringify(t.slice(0, 60))} (see docs/webhooks.md)`);
  return [...new Set(types)];
}

export async function createSubscription(db: Db, masterKey: Buffer, s: { tenant: string | null; url: string; types: string[]; description?: string | undefined; secret?: string | undefined; createdBy: string; publicOnly?: boolean | undefined }): Promise<{ subscription: SubscriptionRow; secret: string }> {
  const id = newSubscriptionId();
  const secret = s.secret ?? newSecret();
  parseSecret(secret, 'secret');
  try {
    const row = await insertSubscription(db, { id, tenant: s.tenant, url: checkReceiverUrl(s.url, s.publicOnly), description: s.description ?? '', types: checkTypes(s.types), secretSealed: sealSecret(masterKey, id, secret), createdBy: s.createdBy });
    return { subscription: row, secret };
  } catch (err) {
    if ((err as { code?: string }).code === '23503') throw new LifeboatError('not_found', `no tenant ${s.tenant}`);
    throw err;
  }
}

export interface SubscriptionChange {
  url?: string | undefined;
  types?: string[] | undefined;
  description?: string | undefined;
  enabled?: boolean | undefined;
  rotateSecret?: boolean | undefined;
}

/** Applies a change; re-enabling clears the failure record. Returns the new secret when rotated. */
export async function changeSubscription(db: Db, masterKey: Buffer, sub: SubscriptionRow, c: SubscriptionChange, publicOnly = false): Promise<{ subscription: SubscriptionRow; secret?: string }> {
  const secret = c.rotateSecret ? newSecret() : undefined;
  const reenable = c.enabled === true && !sub.enabled;
  const row = await updateSubscription(db, sub.id, {
    url: c.url === undefined ? undefined : checkReceiverUrl(c.url, publicOnly),
    types: c.types === undefined ? undefined : checkTypes(c.types),
    description: c.description,
    enabled: c.enabled,
    secretSealed: secret ? sealSecret(masterKey, sub.id, secret) : undefined,
    ...(reenable ? { disabledReason: null, failingSince: null } : {}),
    ...(c.enabled === false && sub.enabled ? { disabledReason: 'disabled by request' } : {}),
  });
  if (!row) throw new LifeboatError('not_found', `no subscription ${sub.id}`);
  return { subscription: row, ...(secret ? { secret } : {}) };
}

export async function removeSubscription(db: Db, id: string): Promise<void> {
  if (!(await deleteSubscription(db, id))) throw new LifeboatError('not_found', `no subscription ${id}`);
}

/** A webhook.test event delivered to this subscription only (enabled or not: it is a check). */
export async function sendTestEvent(db: Db, sub: SubscriptionRow, by: string, now = new Date()): Promise<{ eventId: string; deliveryId: string }> {
  return db.transaction(async (tx) => {
    const eventId = newEventId();
    await insertEvent(tx, { id: eventId, type: TestEventType, tenant: sub.tenant, at: now, data: { subscription: sub.id, requestedBy: by, message: 'a test event from lifeboat' } });
    const deliveryId = await insertDelivery(tx, { id: newMessageId(), subscriptionId: sub.id, eventId, tenant: sub.tenant, at: now });
    return { eventId, deliveryId };
  });
}

/** Sends an ended delivery again (same webhook-id, a new run of the retry schedule). */
export async function redeliver(db: Db, sub: SubscriptionRow, deliveryId: string, now = new Date()): Promise<DeliveryRow> {
  if (!sub.enabled) throw ErrConflict('disabled', `subscription ${sub.id} is disabled; enable it first (PATCH {"enabled": true})`);
  const row = await restartDelivery(db, deliveryId, now);
  if (row) return row;
  const d = await getDelivery(db, deliveryId);
  if (!d) throw new LifeboatError('not_found', `no delivery ${deliveryId}`);
  throw ErrConflict('pending', `delivery ${deliveryId} is still pending (next attempt at ${d.nextAttemptAt.toISOString()})`);
}

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function presentSubscription(s: SubscriptionRow) {
  return {
    id: s.id, tenant: s.tenant, url: s.url, description: s.description, types: s.types, enabled: s.enabled, disabledReason: s.disabledReason,
    failingSince: iso(s.failingSince), createdBy: s.createdBy, createdAt: iso(s.createdAt), updatedAt: iso(s.updatedAt),
  };
}

export function presentDelivery(d: DeliveryRow, event?: EventRow) {
  return {
    id: d.id, subscription: d.subscriptionId, event: d.eventId, ...(event ? { type: event.type } : {}), tenant: d.tenant, status: d.status, attempts: d.attempts,
    nextAttemptAt: d.status === 'pending' ? iso(d.nextAttemptAt) : null, lastStatus: d.lastStatus, lastError: d.lastError, createdAt: iso(d.createdAt), endedAt: iso(d.endedAt),
  };
}

export function presentAttempt(a: AttemptRow) {
  return { attempt: a.attempt, startedAt: iso(a.startedAt), latencyMs: a.latencyMs, ok: a.ok, status: a.status, error: a.error, response: a.responseExcerpt };
}

export function presentEvent(e: EventRow) {
  return { id: e.id, type: e.type, timestamp: iso(e.createdAt), tenant: e.tenant, data: e.data };
}
