/**
 * The webhook side of a worker process: a BullMQ worker on queue "webhook" (each job one delivery
 * attempt, deliver.ts) and a timer around Deliverer.sweep(), the outbox. `serve` runs it embedded
 * with the merge workers (service/workers/run.ts); `worker` runs it alone with them.
 */
import { Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { ServiceContext } from '../context.js';
import type { DelivererOptions } from './deliver.js';
import { Deliverer } from './deliver.js';
import type { WebhookJob } from './queue.js';
import { WebhookQueueName, createWebhookQueue } from './queue.js';

/** How often the outbox is swept: the longest an emitted event waits for its first attempt. */
export const DefaultOutboxSweepMs = 1000;
/** Attempts wait on receivers (up to the attempt timeout each), so many run at once. */
export const DefaultDeliveryConcurrency = 16;

export interface WebhookWorkerOptions extends DelivererOptions {
  prefix?: string | undefined;
  sweepMs?: number;
  concurrency?: number;
}

export async function startWebhookWorker(ctx: ServiceContext, queueConnection: Redis, workerConnection: Redis, options: WebhookWorkerOptions = {}): Promise<{ deliverer: Deliverer; stop(): Promise<void> }> {
  const prefix = options.prefix ? { prefix: options.prefix } : {};
  const queue = createWebhookQueue(queueConnection, options.prefix);
  const deliverer = new Deliverer(ctx, queue, options);
  const worker = new Worker<WebhookJob>(WebhookQueueName, async (job) => deliverer.deliver(job.data), { connection: workerConnection, concurrency: options.concurrency ?? DefaultDeliveryConcurrency, ...prefix });
  worker.on('failed', (job, err) => ctx.log.warn({ job: job?.id, err: err.message }, 'webhook job failed'));
  await worker.waitUntilReady();
  let sweeping = false;
  const timer = setInterval(() => {
    if (sweeping) return;
    sweeping = true;
    deliverer.sweep().catch((err: unknown) => ctx.log.error({ err }, 'webhook outbox sweep failed')).finally(() => {
      sweeping = false;
    });
  }, options.sweepMs ?? DefaultOutboxSweepMs);
  timer.unref();
  return {
    deliverer,
    async stop() {
      clearInterval(timer);
      await worker.close();
      await queue.close();
    },
  };
}
