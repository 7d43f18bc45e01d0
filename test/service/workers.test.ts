/**
 * Three merge workers on real BullMQ and Redis: logs of several disks committed in a shuffled order,
 * each applied exactly once and in order, whichever worker takes which job, with the sweep running.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMergeQueue } from '../../service/queue.js';
import type { MergeQueue } from '../../service/queue.js';
import { startMergeWorkers } from '../../service/workers/run.js';
import { SimAgent, scribble } from './agent-sim.js';
import type { TestEnv } from './helpers.js';
import { enrolledAgent, testEnv, TestRedisUrl, testService } from './helpers.js';

const MiB = 1 << 20;
const Disks = ['d0', 'd1', 'd2'];
const Logs = 6;
let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let redis: Redis;
let queue: MergeQueue;
let workers: Awaited<ReturnType<typeof startMergeWorkers>>[] = [];
let prefix: string;

beforeAll(async () => {
  env = await testEnv();
  prefix = `lbtest-${randomBytes(4).toString('hex')}`;
  redis = new Redis(TestRedisUrl, { maxRetriesPerRequest: null });
  queue = createMergeQueue(redis, prefix);
  svc = await testService(env, queue.enqueue);
  for (let i = 0; i < 3; i++) workers.push(await startMergeWorkers(svc.ctx, { redisUrl: TestRedisUrl, prefix, sweepMs: 100, concurrency: 2 }));
});
afterAll(async () => {
  for (const w of workers) await w.stop();
  workers = [];
  await queue?.queue.obliterate({ force: true }).catch(() => undefined);
  await queue?.close();
  redis?.disconnect();
  await svc?.stop();
  await env?.cleanup();
});

/** Resolves when check() is true, re-checking as workers finish jobs (bounded by the test timeout). */
async function until(check: () => Promise<boolean>): Promise<void> {
  while (!(await check())) await new Promise((r) => setTimeout(r, 20));
}

describe('three workers', () => {
  it('apply every log exactly once, in order', async () => {
    const agent = new SimAgent(svc, await enrolledAgent(svc, 'acme', '*', 'hv1.acme.example'), 'app');
    await agent.register(Disks.map((id) => ({ id, virtualSize: 2 * MiB })));
    const sources = new Map(Disks.map((d) => [d, Buffer.alloc(2 * MiB)]));
    const commits: (() => Promise<unknown>)[] = [];
    for (const d of Disks) {
      const src = sources.get(d)!;
      await agent.commitBase(d, 1, 'full', src, [scribble(src, [[0, 64 * 1024]])]);
      for (let seq = 1; seq <= Logs; seq++) {
        const bytes = await agent.sealed(d, 1, seq, src, scribble(src, [[32 * 1024, 128 * 1024]]));
        commits.push(() => agent.commitLog(d, seq, bytes));
      }
    }
    commits.sort(() => Math.random() - 0.5);
    await Promise.all(commits.map((c) => c()));
    await until(async () => {
      const rows = await svc.ctx.db.query<{ n: number }>(`SELECT count(*)::int8 AS n FROM logs WHERE kind = 'log' AND status = 'applied'`);
      return rows[0]!.n === Disks.length * Logs;
    });
    const merges = await svc.ctx.metrics.merges.get();
    const byOutcome = Object.fromEntries(merges.values.map((v) => [v.labels.outcome, v.value]));
    expect(byOutcome).toEqual({ applied: Disks.length * Logs });
    for (const d of Disks) {
      expect(await agent.diskState(d)).toMatchObject({ appliedSequence: Logs, state: 'replicating' });
      expect((await agent.replica(d)).equals(sources.get(d)!)).toBe(true);
    }
  });
});
