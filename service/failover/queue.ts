/**
 * The failover queues on Redis (BullMQ): one per failover host (`failover-<host>`), so a failover's
 * steps run on the host that owns its VM. One job id per failover: a failover has at most one job
 * waiting or running; the job moves it toward its goal and ends. The reconciler (host.ts) adds the
 * job again whenever the catalog says work is left and Redis lost it.
 */
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { FailoverRow } from '../catalog/failovers.js';

export const FailoverQueuePrefix = 'failover-';

export function failoverQueueName(host: string): string {
  return `${FailoverQueuePrefix}${host}`;
}

export function failoverJobId(id: string): string {
  return `failover.${id}`;
}

export interface FailoverQueues {
  enqueue(f: Pick<FailoverRow, 'id' | 'host'>): Promise<void>;
  close(): Promise<void>;
}

export function createFailoverQueues(connection: Redis, prefix?: string): FailoverQueues {
  const queues = new Map<string, Queue>();
  const queueOf = (host: string) => {
    let q = queues.get(host);
    if (!q) {
      q = new Queue(failoverQueueName(host), { connection, ...(prefix ? { prefix } : {}) });
      queues.set(host, q);
    }
    return q;
  };
  return {
    async enqueue(f) {
      if (!f.host) return;
      await queueOf(f.host).add('failover', { id: f.id }, { jobId: failoverJobId(f.id), removeOnComplete: true, removeOnFail: true, attempts: 50, backoff: { type: 'exponential', delay: 1000 } });
    },
    async close() {
      for (const q of queues.values()) await q.close();
    },
  };
}
