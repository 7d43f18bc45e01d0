/**
 * The webhook queue on Redis (BullMQ): one job per delivery attempt, id `webhook.<delivery>.<n>`
 * (n: the attempts made before it), delayed until the attempt is due. The catalog is the authority:
 * a job only says "try delivery d for the n-th time now"; the outbox sweep (deliver.ts) re-creates
 * jobs that Redis lost, and a job whose attempt was already made does nothing.
 */
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';

export const WebhookQueueName = 'webhook';

export interface WebhookJob {
  id: string;
  attempt: number;
}

export function webhookJobId(id: string, attempt: number): string {
  return `webhook.${id}.${attempt}`;
}

export function createWebhookQueue(connection: Redis, prefix?: string): Queue<WebhookJob> {
  return new Queue<WebhookJob>(WebhookQueueName, { connection, ...(prefix ? { prefix } : {}) });
}

/** Adds the job for attempt n, due after delayMs; a job with that id already there is kept. */
export async function enqueueAttempt(queue: Queue<WebhookJob>, job: WebhookJob, delayMs: number): Promise<void> {
  // Job failures here are the worker's own (catalog unreachable), not the receiver's: those are
  // recorded as attempts and scheduled by deliver.ts, never thrown.
  await queue.add('deliver', job, {
    jobId: webhookJobId(job.id, job.attempt), delay: Math.max(0, Math.round(delayMs)),
    removeOnComplete: true, removeOnFail: true, attempts: 10, backoff: { type: 'exponential', delay: 1000 },
  });
}
