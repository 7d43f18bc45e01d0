/**
 * The failover queues on Redis (BullMQ): one per failover host (`failover-<host>`), so a failover's
 * steps run on the host that owns its VM. One job id per failover: a failover has at most one job
 * waiting or running; the job moves it toward its goal and ends. The reconciler (host.ts) adds the
 * job again whenever the catalog says work is left and Redis lost it. A host's queue carries other
 * kinds of job by name beside `failover` (a recovery plan's run, `plan-run`: HostExtension in host.ts).
 */
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { FailoverRow } from '../catalog/failovers.js';
import { afterCommit } from '../catalog/scope.js';

export const FailoverQueuePrefix = 'failover-';

export function failoverQueueName(host: string): string {
  return `${FailoverQueuePrefix}${host}`;
}

export function failoverJobId(id: string): string {
  return `failover.${id}`;
}

export interface FailoverQueues {
  enqueue(f: Pick<FailoverRow, 'id' | 'host'>): Promise<void>;
  /** Another kind of job on a host's failover queue (a plan run: name plan-run); one job per jobId. */
  enqueueJob(host: string, name: string, jobId: string, data: { id: string }): Promise<void>;
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
  const enqueueJob = async (host: string, name: string, jobId: string, data: { id: string }) => {
    // After the request's transaction commits: the job's worker reads the row the request wrote.
    await afterCommit(async () => {
      await queueOf(host).add(name, data, { jobId, removeOnComplete: true, removeOnFail: true, attempts: 50, backoff: { type: 'exponential', delay: 1000 } });
    });
  };
  return {
    async enqueue(f) {
      if (f.host) await enqueueJob(f.host, 'failover', failoverJobId(f.id), { id: f.id });
    },
    enqueueJob,
    async close() {
      for (const q of queues.values()) await q.close();
    },
  };
}
