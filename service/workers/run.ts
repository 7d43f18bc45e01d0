/**
 * Merge workers in a process: a BullMQ worker on queue "merge" (each job merges one disk) and a
 * timer that calls Merger.merge() as a sweep, and one that calls Pointer.points() and prune(). `serve` runs them embedded; `worker` runs them alone.
 * Beside them: the webhook deliveries (events/worker.ts) and a timer around the event monitors
 * (replication health and resync, expiring agent certificates) and the events' retention.
 */
import { Worker } from 'bullmq';
import type { ServiceContext } from '../context.js';
import type { DiskRef } from '../queue.js';
import { MergeQueueName, connectRedis } from '../queue.js';
import type { EnqueueMerge } from '../replication/uploads.js';
import { pruneOldEvents } from '../events/emit.js';
import { startWebhookWorker } from '../events/worker.js';
import { reportReplicationEvents } from '../replication/health-events.js';
import { reportExpiringCertificates } from '../trust/expiry-events.js';
import { Merger } from './merger.js';
import { Pointer } from './points-job.js';

export const DefaultSweepMs = 5000;
/** Merges wait mostly on fsync and the catalog, so a process runs several disks at once. */
export const DefaultConcurrency = 8;
/** Points are due hourly; checking each minute keeps them within a minute of the hour. */
export const DefaultPointsMs = 60_000;
/** Health, resync and certificate events are found by comparison this often. */
export const DefaultEventMonitorMs = 30_000;

export async function startMergeWorkers(ctx: ServiceContext, options: { redisUrl: string; enqueue?: EnqueueMerge; sweepMs?: number; concurrency?: number; prefix?: string }): Promise<{ merger: Merger; stop(): Promise<void> }> {
  const redis = await connectRedis(options.redisUrl);
  const bullConnection = await connectRedis(options.redisUrl);
  const merger = new Merger(ctx, redis, options.prefix);
  const worker = new Worker<DiskRef>(MergeQueueName, async (job) => {
    const result = await merger.mergeDisk(job.data);
    if (!result) throw new Error(`disk ${job.data.tenant}/${job.data.vm}/${job.data.disk} is being merged by another worker; retrying`);
    return result;
  }, { connection: bullConnection, concurrency: options.concurrency ?? DefaultConcurrency, ...(options.prefix ? { prefix: options.prefix } : {}) });
  worker.on('failed', (job, err) => ctx.log.warn({ job: job?.id, err: err.message }, 'merge job failed'));
  // Ready before the caller may stop it: a worker closed while it still connects rejects its run loop
  // ("Connection is closed") with no one to catch it, and the process dies.
  await worker.waitUntilReady();
  let sweeping = false;
  const timer = setInterval(() => {
    if (sweeping) return;
    sweeping = true;
    merger.merge({ olderThanMs: 2 * (options.sweepMs ?? ctx.config.mergeSweepMs ?? DefaultSweepMs) }).catch((err: unknown) => ctx.log.error({ err }, 'merge sweep failed')).finally(() => {
      sweeping = false;
    });
  }, options.sweepMs ?? ctx.config.mergeSweepMs ?? DefaultSweepMs);
  timer.unref();
  const pointer = new Pointer(ctx, redis, options.prefix);
  const pointsTimer = setInterval(() => {
    pointer.points().then(() => pointer.prune()).catch((err: unknown) => ctx.log.error({ err }, 'recovery points failed'));
  }, DefaultPointsMs);
  pointsTimer.unref();
  const webhookConnection = await connectRedis(options.redisUrl);
  const webhooks = await startWebhookWorker(ctx, redis, webhookConnection, { prefix: options.prefix });
  const monitorTimer = setInterval(() => {
    reportReplicationEvents(ctx.db).then(() => reportExpiringCertificates(ctx.db)).then(() => pruneOldEvents(ctx.db)).catch((err: unknown) => ctx.log.error({ err }, 'event monitors failed'));
  }, DefaultEventMonitorMs);
  monitorTimer.unref();
  return {
    merger,
    async stop() {
      clearInterval(timer);
      clearInterval(pointsTimer);
      clearInterval(monitorTimer);
      await webhooks.stop();
      await worker.close();
      bullConnection.disconnect();
      webhookConnection.disconnect();
      redis.disconnect();
    },
  };
}
