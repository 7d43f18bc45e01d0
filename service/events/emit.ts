/**
 * emitEvent: the one call the rest of the service makes to report an event (docs/webhooks.md).
 *
 *   await emitEvent(tx, { type: 'quota.reached', tenant: 'acme', data: { quota: 'protectedVms', limit: 10, used: 10 } });
 *
 * Pass the transaction that makes the change the event reports, so both are written or neither. The
 * event and one pending delivery per matching subscription go into the catalog (the outbox); the
 * worker process's outbox sweep hands them to the webhook queue within a second or so, and again
 * after Redis lost them. Nothing here talks to Redis or the network, so emitting never fails because
 * a receiver or Redis is down. Returns the event's id and how many deliveries it made.
 */
import { randomBytes } from 'node:crypto';
import { newMessageId } from '../../shared/protocol/standard-webhooks.js';
import type { Queryable } from '../catalog/db.js';
import { fanOut, insertEvent, pruneEvents } from '../catalog/webhooks.js';
import type { NewEvent } from './types.js';
import { AllTypes, OptInEventTypes } from './types.js';

export function newEventId(): string {
  return `evt_${randomBytes(18).toString('base64url')}`;
}

export async function emitEvent(db: Queryable, e: NewEvent): Promise<{ id: string; deliveries: string[] }> {
  const id = newEventId();
  const at = e.at ?? new Date();
  await insertEvent(db, { id, type: e.type, tenant: e.tenant, data: e.data, at });
  const deliveries = await fanOut(db, { id, type: e.type, tenant: e.tenant, at }, AllTypes, OptInEventTypes, newMessageId);
  return { id, deliveries };
}

/** How long events, their deliveries and attempt logs are kept (a pending delivery keeps its event). */
export const EventRetentionMs = 30 * 24 * 3_600_000;

/** Deletes what is older than the retention; the worker's event monitor calls it. Returns how many events went. */
export function pruneOldEvents(db: Queryable, now = new Date()): Promise<number> {
  return pruneEvents(db, new Date(now.getTime() - EventRetentionMs));
}
