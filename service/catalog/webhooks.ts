/**
 * Events, webhook subscriptions, deliveries and their attempts (migration 011). Plain SQL; the rules
 * (fan-out, retry schedule, disabling) live in service/events/. Times are passed in, not taken from
 * the database's clock, so the delivery code runs on an injected clock in tests.
 */
import type { Queryable } from './db.js';

export interface EventRow {
  id: string;
  type: string;
  tenant: string | null;
  data: Record<string, unknown>;
  createdAt: Date;
}

export interface SubscriptionRow {
  id: string;
  tenant: string | null;
  url: string;
  description: string;
  types: string[];
  secretSealed: string;
  enabled: boolean;
  disabledReason: string | null;
  failingSince: Date | null;
  createdBy: string;
  createdAt: Date;
  updatedAt: Date;
}

export type DeliveryStatus = 'pending' | 'succeeded' | 'failed';

export interface DeliveryRow {
  id: string;
  subscriptionId: string;
  eventId: string;
  tenant: string | null;
  status: DeliveryStatus;
  attempts: number;
  runStart: number;
  nextAttemptAt: Date;
  queuedAttempt: number | null;
  lastStatus: number | null;
  lastError: string | null;
  createdAt: Date;
  endedAt: Date | null;
}

export interface AttemptRow {
  deliveryId: string;
  attempt: number;
  startedAt: Date;
  latencyMs: number;
  ok: boolean;
  status: number | null;
  error: string | null;
  responseExcerpt: string;
}

const eventCols = 'id, type, tenant, data, created_at AS "createdAt"';
const subCols = `id, tenant, url, description, types, secret_sealed AS "secretSealed", enabled, disabled_reason AS "disabledReason",
  failing_since AS "failingSince", created_by AS "createdBy", created_at AS "createdAt", updated_at AS "updatedAt"`;
const deliveryCols = `id, subscription_id AS "subscriptionId", event_id AS "eventId", tenant, status, attempts, run_start AS "runStart",
  next_attempt_at AS "nextAttemptAt", queued_attempt AS "queuedAttempt", last_status AS "lastStatus", last_error AS "lastError",
  created_at AS "createdAt", ended_at AS "endedAt"`;
const attemptCols = `delivery_id AS "deliveryId", attempt, started_at AS "startedAt", latency_ms AS "latencyMs", ok, status, error,
  response_excerpt AS "responseExcerpt"`;

// ---- events and their fan-out

export async function insertEvent(db: Queryable, e: { id: string; type: string; tenant: string | null; data: Record<string, unknown>; at: Date }): Promise<void> {
  await db.query('INSERT INTO events (id, type, tenant, data, created_at) VALUES ($1, $2, $3, $4, $5)', [e.id, e.type, e.tenant, JSON.stringify(e.data), e.at]);
}

/**
 * One pending delivery of the event per enabled subscription that sees it: hoster-wide ones see
 * every event, a tenant's its tenant's; the type is named in the filter, or the filter has '*' and
 * the type is not opt-in. Ids come from newId, one per row. Returns the delivery ids.
 */
export async function fanOut(db: Queryable, e: { id: string; type: string; tenant: string | null; at: Date }, allTypes: string, optIn: readonly string[], newId: () => string): Promise<string[]> {
  const subs = await db.query<{ id: string; tenant: string | null }>(`SELECT id, tenant FROM webhook_subscriptions
    WHERE enabled AND (tenant IS NULL OR tenant = $1) AND ($2 = ANY(types) OR ($3 = ANY(types) AND NOT ($2 = ANY($4::text[]))))`,
  [e.tenant, e.type, allTypes, optIn]);
  const ids: string[] = [];
  for (const s of subs) ids.push(await insertDelivery(db, { id: newId(), subscriptionId: s.id, eventId: e.id, tenant: s.tenant, at: e.at }));
  return ids;
}

export async function insertDelivery(db: Queryable, d: { id: string; subscriptionId: string; eventId: string; tenant: string | null; at: Date }): Promise<string> {
  await db.query(`INSERT INTO webhook_deliveries (id, subscription_id, event_id, tenant, status, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, 'pending', $5, $5)`,
    [d.id, d.subscriptionId, d.eventId, d.tenant, d.at]);
  return d.id;
}

export async function getEvent(db: Queryable, id: string): Promise<EventRow | undefined> {
  return (await db.query<EventRow>(`SELECT ${eventCols} FROM events WHERE id = $1`, [id]))[0];
}

/**
 * A page of a newest-first list (events, deliveries): rows made in [from, to), past `after` (the
 * position of the previous page's last row: its time in microseconds and its id).
 */
export interface NewestFirst { from?: Date | undefined; to?: Date | undefined; after?: { us: number; id: string } | undefined; limit: number }

/** A row's position in a newest-first list: created_at in microseconds (exact in a double), then id. */
const keyUs = 'floor(extract(epoch from created_at) * 1000000)::float8';

/** The WHERE terms of a NewestFirst page, numbering their parameters after those in params. */
function newestFirst(q: NewestFirst, where: string[], params: unknown[]): void {
  if (q.from !== undefined) where.push(`created_at >= $${params.push(q.from)}`);
  if (q.to !== undefined) where.push(`created_at < $${params.push(q.to)}`);
  if (q.after !== undefined) where.push(`(${keyUs} < $${params.push(q.after.us)} OR (${keyUs} = $${params.length} AND id > $${params.push(q.after.id)}))`);
}

export async function listEvents(db: Queryable, filter: { tenant?: string | null | undefined; type?: string | undefined } & NewestFirst): Promise<(EventRow & { keyUs: number })[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (filter.tenant !== undefined) where.push(filter.tenant === null ? 'tenant IS NULL' : `tenant = $${params.push(filter.tenant)}`);
  if (filter.type !== undefined) where.push(`type = $${params.push(filter.type)}`);
  newestFirst(filter, where, params);
  return db.query(`SELECT ${eventCols}, ${keyUs} AS "keyUs" FROM events ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
    ORDER BY ${keyUs} DESC, id LIMIT $${params.push(filter.limit)}`, params);
}

// ---- subscriptions

export async function insertSubscription(db: Queryable, s: Pick<SubscriptionRow, 'id' | 'tenant' | 'url' | 'description' | 'types' | 'secretSealed' | 'createdBy'>): Promise<SubscriptionRow> {
  return (await db.query<SubscriptionRow>(`INSERT INTO webhook_subscriptions (id, tenant, url, description, types, secret_sealed, created_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ${subCols}`, [s.id, s.tenant, s.url, s.description, s.types, s.secretSealed, s.createdBy]))[0]!;
}

export async function getSubscription(db: Queryable, id: string, forUpdate = false): Promise<SubscriptionRow | undefined> {
  return (await db.query<SubscriptionRow>(`SELECT ${subCols} FROM webhook_subscriptions WHERE id = $1${forUpdate ? ' FOR UPDATE' : ''}`, [id]))[0];
}

/** tenant undefined: every subscription; null: the hoster-wide ones; a name: that tenant's. */
export async function listSubscriptions(db: Queryable, tenant: string | null | undefined): Promise<SubscriptionRow[]> {
  if (tenant === undefined) return db.query<SubscriptionRow>(`SELECT ${subCols} FROM webhook_subscriptions ORDER BY created_at, id`);
  if (tenant === null) return db.query<SubscriptionRow>(`SELECT ${subCols} FROM webhook_subscriptions WHERE tenant IS NULL ORDER BY created_at, id`);
  return db.query<SubscriptionRow>(`SELECT ${subCols} FROM webhook_subscriptions WHERE tenant = $1 ORDER BY created_at, id`, [tenant]);
}

export async function updateSubscription(db: Queryable, id: string, s: Partial<Pick<SubscriptionRow, 'url' | 'description' | 'types' | 'secretSealed' | 'enabled' | 'disabledReason' | 'failingSince'>>): Promise<SubscriptionRow | undefined> {
  const cols: Record<string, string> = { url: 'url', description: 'description', types: 'types', secretSealed: 'secret_sealed', enabled: 'enabled', disabledReason: 'disabled_reason', failingSince: 'failing_since' };
  const params: unknown[] = [id];
  const sets = Object.entries(s).filter(([, v]) => v !== undefined).map(([k, v]) => `${cols[k]} = $${params.push(v)}`);
  return (await db.query<SubscriptionRow>(`UPDATE webhook_subscriptions SET ${[...sets, 'updated_at = now()'].join(', ')} WHERE id = $1 RETURNING ${subCols}`, params))[0];
}

export async function deleteSubscription(db: Queryable, id: string): Promise<boolean> {
  return (await db.query('DELETE FROM webhook_subscriptions WHERE id = $1 RETURNING id', [id])).length > 0;
}

// ---- deliveries and attempts

export async function getDelivery(db: Queryable, id: string): Promise<DeliveryRow | undefined> {
  return (await db.query<DeliveryRow>(`SELECT ${deliveryCols} FROM webhook_deliveries WHERE id = $1`, [id]))[0];
}

export async function listDeliveries(db: Queryable, filter: { subscriptionId?: string | undefined; tenant?: string | undefined; status?: DeliveryStatus | undefined } & NewestFirst): Promise<(DeliveryRow & { keyUs: number })[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (filter.subscriptionId !== undefined) where.push(`subscription_id = $${params.push(filter.subscriptionId)}`);
  if (filter.tenant !== undefined) where.push(`tenant = $${params.push(filter.tenant)}`);
  if (filter.status !== undefined) where.push(`status = $${params.push(filter.status)}`);
  newestFirst(filter, where, params);
  return db.query(`SELECT ${deliveryCols}, ${keyUs} AS "keyUs" FROM webhook_deliveries ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
    ORDER BY ${keyUs} DESC, id LIMIT $${params.push(filter.limit)}`, params);
}

/**
 * Takes the delivery's attempt number `attempt` for one sender until claimUntil: undefined when it
 * is no longer pending at that attempt (done by another job) or another sender holds it.
 */
export async function claimDelivery(db: Queryable, id: string, attempt: number, now: Date, claimUntil: Date): Promise<DeliveryRow | undefined> {
  return (await db.query<DeliveryRow>(`UPDATE webhook_deliveries SET claimed_until = $4 WHERE id = $1 AND status = 'pending' AND attempts = $2
    AND (claimed_until IS NULL OR claimed_until < $3) RETURNING ${deliveryCols}`, [id, attempt, now, claimUntil]))[0];
}

export async function insertAttempt(db: Queryable, a: AttemptRow): Promise<void> {
  await db.query(`INSERT INTO webhook_attempts (delivery_id, attempt, started_at, latency_ms, ok, status, error, response_excerpt) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (delivery_id, attempt) DO NOTHING`, [a.deliveryId, a.attempt, a.startedAt, a.latencyMs, a.ok, a.status, a.error, a.responseExcerpt]);
}

export async function listAttempts(db: Queryable, deliveryId: string): Promise<AttemptRow[]> {
  return db.query<AttemptRow>(`SELECT ${attemptCols} FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt`, [deliveryId]);
}

/** After an attempt: the count goes up, and the delivery ends (succeeded, failed) or waits for nextAt. */
export async function recordOutcome(db: Queryable, id: string, o: { status: DeliveryStatus; nextAt: Date | null; lastStatus: number | null; lastError: string | null; at: Date }): Promise<void> {
  await db.query(`UPDATE webhook_deliveries SET attempts = attempts + 1, status = $2, next_attempt_at = coalesce($3, next_attempt_at), last_status = $4, last_error = $5,
    claimed_until = NULL, ended_at = CASE WHEN $2 = 'pending' THEN NULL ELSE $6::timestamptz END WHERE id = $1`, [id, o.status, o.nextAt, o.lastStatus, o.lastError, o.at]);
}

/** Ends every pending delivery of a subscription without an attempt (it was disabled). */
export async function failPendingDeliveries(db: Queryable, subscriptionId: string, reason: string, at: Date): Promise<number> {
  return (await db.query(`UPDATE webhook_deliveries SET status = 'failed', last_error = $2, ended_at = $3, claimed_until = NULL
    WHERE subscription_id = $1 AND status = 'pending' RETURNING id`, [subscriptionId, reason, at])).length;
}

/** A redelivery: the delivery is pending again from now, its retry schedule starting over. */
export async function restartDelivery(db: Queryable, id: string, at: Date): Promise<DeliveryRow | undefined> {
  return (await db.query<DeliveryRow>(`UPDATE webhook_deliveries SET status = 'pending', run_start = attempts, next_attempt_at = $2, queued_attempt = NULL,
    claimed_until = NULL, ended_at = NULL WHERE id = $1 AND status <> 'pending' RETURNING ${deliveryCols}`, [id, at]))[0];
}

/**
 * The outbox: pending deliveries with no queue job for their next attempt, and those overdue by
 * more than overdueMs (their job was lost with Redis), oldest first.
 */
export async function unqueuedDeliveries(db: Queryable, now: Date, overdueMs: number, limit: number): Promise<Pick<DeliveryRow, 'id' | 'attempts' | 'nextAttemptAt'>[]> {
  return db.query(`SELECT id, attempts, next_attempt_at AS "nextAttemptAt" FROM webhook_deliveries WHERE status = 'pending'
    AND (queued_attempt IS DISTINCT FROM attempts OR next_attempt_at < $1) ORDER BY next_attempt_at LIMIT $2`, [new Date(now.getTime() - overdueMs), limit]);
}

export async function markQueued(db: Queryable, id: string, attempt: number): Promise<void> {
  await db.query('UPDATE webhook_deliveries SET queued_attempt = $2 WHERE id = $1 AND attempts = $2', [id, attempt]);
}

// ---- what the event monitors last saw

export async function getWatch(db: Queryable, key: string): Promise<string | undefined> {
  return (await db.query<{ value: string }>('SELECT value FROM event_watches WHERE key = $1', [key]))[0]?.value;
}

/** Sets key to value; true when that changed it (the caller then reports the change). */
export async function setWatch(db: Queryable, key: string, value: string): Promise<boolean> {
  const rows = await db.query(`INSERT INTO event_watches (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2, updated_at = now()
    WHERE event_watches.value <> $2 RETURNING key`, [key, value]);
  return rows.length > 0;
}

export async function dropWatch(db: Queryable, key: string): Promise<void> {
  await db.query('DELETE FROM event_watches WHERE key = $1', [key]);
}

export async function watchesWithPrefix(db: Queryable, prefix: string): Promise<{ key: string; value: string }[]> {
  return db.query('SELECT key, value FROM event_watches WHERE starts_with(key, $1)', [prefix]);
}

/** Deletes events from before `before` with their ended deliveries and attempts; an event with a pending delivery stays. */
export async function pruneEvents(db: Queryable, before: Date): Promise<number> {
  return (await db.query(`DELETE FROM events e WHERE created_at < $1
    AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.status = 'pending') RETURNING id`, [before])).length;
}
