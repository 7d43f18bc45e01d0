/**
 * The merge queue on Redis (BullMQ). One job id per disk, so a disk has at most one waiting merge
 * however many commits arrive; a job that is already running when a commit lands is followed by the
 * worker's own re-check and by the periodic sweep, so no commit waits for a job that never comes.
 */
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { LifeboatError } from '../shared/errors.js';
import type { EnqueueMerge } from './replication/uploads.js';

export const MergeQueueName = 'merge';
export const RedisConnectTimeoutMs = 5000;

export interface DiskRef {
  tenant: string;
  vm: string;
  disk: string;
}

/** BullMQ job ids may not contain ':'; ids are [a-z0-9_-], so '.' separates them unambiguously. */
export function mergeJobId(ref: DiskRef): string {
  return `merge.${ref.tenant}.${ref.vm}.${ref.disk}`;
}

/** A Redis connection for BullMQ; fails with one clear line when Redis does not answer. */
export async function connectRedis(url: string): Promise<Redis> {
  const redis = new Redis(url, { maxRetriesPerRequest: null, lazyConnect: true, connectTimeout: RedisConnectTimeoutMs, retryStrategy: (n) => Math.min(n * 200, 2000) });
  // Until connected, ioredis's error events are this function's to report (one line below), not
  // ioredis's own "Unhandled error event" with a stack trace.
  const quiet = () => undefined;
  redis.on('error', quiet);
  try {
    await redis.connect();
    await redis.ping();
    redis.off('error', quiet);
  } catch (err) {
    redis.disconnect();
    throw new LifeboatError('unavailable', `Redis at ${url.replace(/\/\/[^@]*@/, '//')} is not reachable (${(err as Error).message}); set REDIS_URL or redis.url`, { cause: err });
  }
  return redis;
}

export interface MergeQueue {
  enqueue: EnqueueMerge;
  queue: Queue;
  close(): Promise<void>;
}

export function createMergeQueue(connection: Redis, prefix?: string): MergeQueue {
  const queue = new Queue(MergeQueueName, { connection, ...(prefix ? { prefix } : {}) });
  return {
    queue,
    async enqueue(ref) {
      await queue.add('merge', ref, { jobId: mergeJobId(ref), removeOnComplete: true, removeOnFail: true, attempts: 20, backoff: { type: 'fixed', delay: 250 } });
    },
    close: () => queue.close(),
  };
}
