/**
 * Worker processes killed with SIGKILL at random points of their merges, again and again: the replica
 * ends equal to the reference the test keeps, every log applied, none lost. A killed worker's lock is
 * removed by the test, as its TTL would expire; the fencing token in state.json keeps order.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mergeJobId } from '../../service/queue.js';
import { Merger } from '../../service/workers/merger.js';
import { SimAgent, scribble } from './agent-sim.js';
import type { TestEnv } from './helpers.js';
import { enrolledAgent, testEnv, testService } from './helpers.js';

const MiB = 1 << 20;
const Logs = 12;
const Kills = 5;
const bin = join(import.meta.dirname, '..', '..', 'bin', 'lifeboat-service.js');
let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let redis: Redis;

beforeAll(async () => {
  env = await testEnv((c) => {
    c.replicaFormat = 'vhdx';
    c.mergeSweepMs = 50;
  });
  svc = await testService(env);
  redis = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: null });
});
afterAll(async () => {
  redis?.disconnect();
  await svc?.stop();
  await env?.cleanup();
});

/**
 * Starts a worker process and SIGKILLs it at a random moment soon after it has applied something
 * more than `after` (so the kill lands inside a run of merges, not before the first).
 */
function runAndKill(progress: () => Promise<number>, after: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, 'worker', '--config', env.config.path], { stdio: ['ignore', 'ignore', 'ignore'] });
    let exited = false;
    child.on('error', reject);
    child.on('exit', () => {
      exited = true;
      resolve();
    });
    const watch = async () => {
      while (!exited && (await progress()) <= after) await new Promise((r) => setTimeout(r, 10));
      if (!exited) setTimeout(() => child.kill('SIGKILL'), Math.floor(Math.random() * 150));
    };
    watch().catch(reject);
  });
}

describe('a worker killed mid-merge', () => {
  it('leaves a replica equal to the reference, every log applied', async () => {
    const agent = new SimAgent(svc, await enrolledAgent(svc, 'acme', '*', 'hv1.acme.example'), 'db');
    await agent.register([{ id: 'd0', virtualSize: 8 * MiB }]);
    const source = Buffer.alloc(8 * MiB);
    await agent.commitBase('d0', 1, 'full', source, [scribble(source, [[0, 2 * MiB]])]);
    for (let seq = 1; seq <= Logs; seq++) {
      const at = (seq * 3 % 7) * MiB;
      const ranges: [number, number][] = [[at, MiB], [(at + 3 * MiB) % (7 * MiB), 256 * 1024]];
      ranges.sort((a, b) => a[0] - b[0]);
      await agent.commitLog('d0', seq, await agent.sealed('d0', 1, seq, source, scribble(source, ranges)));
    }
    const applied = async () => (await svc.ctx.db.query<{ s: number }>(`SELECT applied_sequence AS s FROM disks WHERE id = 'd0'`))[0]!.s;
    let kills = 0;
    for (let last = -1; kills < Kills && last < Logs - 1; kills++) {
      await runAndKill(applied, last);
      await redis.del(`lifeboat:lock:${mergeJobId({ tenant: 'acme', vm: 'db', disk: 'd0' })}`);
      last = await applied();
    }
    expect(kills).toBeGreaterThan(1);
    const merger = new Merger(svc.ctx, redis);
    await merger.merge();
    expect(await agent.diskState('d0')).toMatchObject({ generation: 1, appliedSequence: Logs, state: 'replicating', pendingLogs: 0 });
    const rows = await svc.ctx.db.query<{ status: string }>(`SELECT status FROM logs WHERE kind = 'log' ORDER BY sequence`);
    expect(rows.every((r) => r.status === 'applied' || r.status === 'skipped')).toBe(true);
    expect((await agent.replica('d0')).equals(source)).toBe(true);
  });
});
