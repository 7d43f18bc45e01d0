/**
 * Job `webhook` (queue.ts): one delivery attempt.
 *
 * Input: {id, attempt}: the delivery and the number of attempts made before this one.
 * Output: the attempt POSTed (post.ts) with Standard Webhooks headers (the delivery id as webhook-id,
 *   the same on every attempt), logged in webhook_attempts, and the delivery either ended (succeeded,
 *   or failed after the last retry) or rescheduled by RetryDelaysMs with the next job added.
 *   A subscription whose attempts have failed for DisableAfterMs (no success in between) is disabled
 *   on the failed attempt that finds it so: its pending deliveries end as failed and the event
 *   webhook.subscription_disabled is emitted (to the other subscriptions that see it).
 * Failure codes: a receiver's failure is never the job's failure (it is an attempt in the log); the
 *   job throws only when the catalog or Redis does, and BullMQ retries it.
 * Idempotent: the attempt is claimed in the catalog (attempts = n, claim lease), so a repeated or
 *   duplicated job finds attempts moved on and does nothing; a worker killed mid-attempt leaves a
 *   claim that lapses, and the retried job makes the attempt again.
 *
 * sweep(): the outbox. Deliveries that have no job for their next attempt (just emitted, or the
 * worker stopped between recording and enqueueing) or are overdue (Redis lost the job) are queued.
 * Both are public methods around which the worker process runs a BullMQ worker and a timer; tests
 * call them directly with an injected clock.
 */
import type { Queue } from 'bullmq';
import { parseSecret, signHeaders } from '../../shared/protocol/standard-webhooks.js';
import type { Queryable } from '../catalog/db.js';
import type { DeliveryRow, SubscriptionRow } from '../catalog/webhooks.js';
import { claimDelivery, failPendingDeliveries, getDelivery, getEvent, getSubscription, insertAttempt, markQueued, recordOutcome, unqueuedDeliveries, updateSubscription } from '../catalog/webhooks.js';
import type { ServiceContext } from '../context.js';
import { emitEvent } from './emit.js';
import type { AttemptResult } from './post.js';
import { DefaultAttemptTimeoutMs, postOnce } from './post.js';
import type { WebhookJob } from './queue.js';
import { enqueueAttempt } from './queue.js';
import { openSecret } from './secrets.js';
import type { EventPayload, EventType } from './types.js';

const Second = 1000;
const Hour = 3600 * Second;
/**
 * The wait after each failed attempt of a run: ×3 from 10 s, capped at 6 h. 12 attempts in all,
 * the last about 27 h after the first (10 s + 30 s + … + 2 h 1 m + 4 × 6 h).
 */
export const RetryDelaysMs: readonly number[] = [10, 30, 90, 270, 810, 2430, 7290].map((s) => s * Second).concat([6 * Hour, 6 * Hour, 6 * Hour, 6 * Hour]);
/** A subscription whose attempts have all failed for this long is disabled. */
export const DisableAfterMs = 24 * Hour;
/** A pending delivery this far past due has lost its job (Redis lost it): the sweep queues it again. */
export const OverdueMs = 2 * 60 * Second;
export const SweepBatch = 500;

export interface DelivererOptions {
  timeoutMs?: number;
  now?: () => Date;
}

export type AttemptOutcome = 'succeeded' | 'retrying' | 'failed' | 'disabled' | 'skipped';

export class Deliverer {
  private readonly now: () => Date;
  private readonly timeoutMs: number;

  constructor(private readonly ctx: ServiceContext, private readonly queue: Queue<WebhookJob>, options: DelivererOptions = {}) {
    this.now = options.now ?? (() => new Date());
    this.timeoutMs = options.timeoutMs ?? DefaultAttemptTimeoutMs;
  }

  /** Makes attempt number `attempt` (0-based) of the delivery, if it is still due; see the header. */
  async deliver(job: WebhookJob): Promise<AttemptOutcome> {
    const db = this.ctx.db;
    const startedAt = this.now();
    const d = await claimDelivery(db, job.id, job.attempt, startedAt, new Date(startedAt.getTime() + 2 * this.timeoutMs + 30 * Second));
    if (!d) return 'skipped';
    const sub = await getSubscription(db, d.subscriptionId);
    if (!sub) return 'skipped';
    if (!sub.enabled) {
      await failPendingDeliveries(db, sub.id, `subscription disabled${sub.disabledReason ? `: ${sub.disabledReason}` : ''}`, startedAt);
      return 'skipped';
    }
    const event = (await getEvent(db, d.eventId))!;
    const payload: EventPayload = { id: event.id, type: event.type as EventType, timestamp: event.createdAt.toISOString(), tenant: event.tenant, data: event.data };
    const body = JSON.stringify(payload);
    const key = parseSecret(await this.ctx.master.withKeys((keys) => openSecret(keys, sub.id, sub.secretSealed)), `subscription ${sub.id} secret`);
    const headers = { 'content-type': 'application/json', 'user-agent': 'lifeboat-webhooks/1', ...signHeaders(key, body, d.id, startedAt.getTime()) };
    // A tenant's receiver may reach only public addresses, unless the hoster allows more (a lab).
    const publicOnly = sub.tenant !== null && !this.ctx.config.webhooks.allowPrivateTargets;
    const result = await postOnce(sub.url, headers, body, this.timeoutMs, { publicOnly });
    const at = this.now();
    const { outcome, nextAt } = await db.transaction(async (tx) => {
      // Locked, so two attempts of one subscription ending at once agree on failingSince.
      const current = await getSubscription(tx, sub.id, true);
      if (!current) return { outcome: 'skipped' as const, nextAt: null };
      await insertAttempt(tx, { deliveryId: d.id, attempt: d.attempts + 1, startedAt, latencyMs: result.latencyMs, ok: result.ok, status: result.status, error: result.error, responseExcerpt: result.excerpt });
      return this.settle(tx, d, current, result, at);
    });
    if (nextAt) await this.enqueue(d.id, d.attempts + 1, nextAt);
    this.ctx.log.debug({ delivery: d.id, attempt: d.attempts + 1, status: result.status, outcome }, 'webhook attempt');
    return outcome;
  }

  /** Records the attempt's consequence for the delivery and the subscription. */
  private async settle(tx: Queryable, d: DeliveryRow, sub: SubscriptionRow, r: AttemptResult, at: Date): Promise<{ outcome: AttemptOutcome; nextAt: Date | null }> {
    const why = r.error ?? null;
    if (r.ok) {
      await recordOutcome(tx, d.id, { status: 'succeeded', nextAt: null, lastStatus: r.status, lastError: null, at });
      if (sub.failingSince) await updateSubscription(tx, sub.id, { failingSince: null });
      return { outcome: 'succeeded', nextAt: null };
    }
    const failingSince = sub.failingSince ?? at;
    if (at.getTime() - failingSince.getTime() >= DisableAfterMs) {
      const reason = `every attempt failed since ${failingSince.toISOString()}; last: ${why}`;
      await recordOutcome(tx, d.id, { status: 'failed', nextAt: null, lastStatus: r.status, lastError: why, at });
      await updateSubscription(tx, sub.id, { enabled: false, disabledReason: reason.slice(0, 500) });
      await failPendingDeliveries(tx, sub.id, 'subscription disabled', at);
      await emitEvent(tx, { type: 'webhook.subscription_disabled', tenant: sub.tenant, at, data: { subscription: sub.id, url: sub.url, failingSince: failingSince.toISOString(), lastError: why } });
      return { outcome: 'disabled', nextAt: null };
    }
    if (!sub.failingSince) await updateSubscription(tx, sub.id, { failingSince });
    const delay = RetryDelaysMs[d.attempts - d.runStart];
    if (delay === undefined) {
      await recordOutcome(tx, d.id, { status: 'failed', nextAt: null, lastStatus: r.status, lastError: why, at });
      return { outcome: 'failed', nextAt: null };
    }
    const nextAt = new Date(at.getTime() + delay);
    await recordOutcome(tx, d.id, { status: 'pending', nextAt, lastStatus: r.status, lastError: why, at });
    return { outcome: 'retrying', nextAt };
  }

  /** Queues every delivery the outbox holds without a job (see the header); returns how many. */
  async sweep(): Promise<number> {
    const rows = await unqueuedDeliveries(this.ctx.db, this.now(), OverdueMs, SweepBatch);
    for (const r of rows) await this.enqueue(r.id, r.attempts, r.nextAttemptAt);
    return rows.length;
  }

  /** Queues the delivery now (a redelivery or a test event) instead of at the next sweep. */
  async queueNow(id: string): Promise<void> {
    const d = await getDelivery(this.ctx.db, id);
    if (d?.status === 'pending') await this.enqueue(d.id, d.attempts, d.nextAttemptAt);
  }

  private async enqueue(id: string, attempt: number, at: Date): Promise<void> {
    await enqueueAttempt(this.queue, { id, attempt }, at.getTime() - this.now().getTime());
    await markQueued(this.ctx.db, id, attempt);
  }
}
