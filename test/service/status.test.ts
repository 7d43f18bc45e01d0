/**
 * The VM status document's hour statistics over every disk of the VM (service/replication/status.ts),
 * on a real catalog: logs shipped by the simulated agent over mutual TLS, bases merged by a real
 * Merger, the status read through the agent endpoint.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getVm } from '../../service/catalog/vms.js';
import { vmStatus } from '../../service/replication/status.js';
import { Merger } from '../../service/workers/merger.js';
import { SimAgent, scribble } from './agent-sim.js';
import type { TestEnv } from './helpers.js';
import { enrolledAgent, testEnv, TestRedisUrl, testService } from './helpers.js';

const KiB = 1024;
const MiB = 1 << 20;
let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let redis: Redis;
let merger: Merger;

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  redis = new Redis(TestRedisUrl, { maxRetriesPerRequest: null });
  merger = new Merger(svc.ctx, redis, `lbtest-${env.schema}`);
});
afterAll(async () => {
  redis?.disconnect();
  await svc?.stop();
  await env?.cleanup();
});

async function shipLogs(agent: SimAgent, disk: string, source: Buffer, count: number, bytesEach: number): Promise<number[]> {
  const sizes: number[] = [];
  for (let seq = 1; seq <= count; seq++) {
    const at = (seq * 64 * KiB) % (source.length - bytesEach);
    sizes.push((await agent.commitLog(disk, seq, await agent.sealed(disk, 1, seq, source, scribble(source, [[at, bytesEach]])))).size);
  }
  return sizes;
}

describe('hour statistics of a VM', () => {
  it('count a cycle only when every disk shipped, and cover every disk\'s sizes and pending work', async () => {
    const agent = new SimAgent(svc, await enrolledAgent(svc, 'acme', '*', 'hv1.acme.example'), 'two');
    await agent.register([{ id: 'd0', virtualSize: 4 * MiB }, { id: 'd1', virtualSize: 4 * MiB }]);
    const s0 = Buffer.alloc(4 * MiB);
    const s1 = Buffer.alloc(4 * MiB);
    await agent.commitBase('d0', 1, 'full', s0, [scribble(s0, [[0, 64 * KiB]])]);
    await agent.commitBase('d1', 1, 'full', s1, [scribble(s1, [[0, 64 * KiB]])]);
    await merger.merge();
    // The first disk ships every cycle; the second misses most of them and its logs are larger.
    const d0 = await shipLogs(agent, 'd0', s0, 8, 4 * KiB);
    const d1 = await shipLogs(agent, 'd1', s1, 3, 256 * KiB);
    const vm = (await getVm(svc.ctx.db, 'acme', 'two'))!;
    // Ten minutes on at 30 s a cycle: 20 cycles expected of each disk.
    const status = await vmStatus(svc.ctx.db, vm, new Date(Date.now() + 600_000));
    expect(status.cycles).toEqual({ expected: 20, successful: 3, missed: 17 });
    expect(status.health).toBe('warning');
    const all = [...d0, ...d1];
    expect(status.logBytes).toEqual({ average: Math.round(all.reduce((a, b) => a + b, 0) / all.length), largest: Math.max(...d1) });
    expect(status.pendingLogs).toBe(11);
    expect(status.pendingBytes).toBe(all.reduce((a, b) => a + b, 0));
    expect(status.disks.map((d) => [d.id, d.pendingLogs, d.pendingBytes])).toEqual([
      ['d0', 8, d0.reduce((a, b) => a + b, 0)], ['d1', 3, d1.reduce((a, b) => a + b, 0)],
    ]);
    // The agent sees the same document.
    const seen = (await agent.call('GET', '/v1/vms/two')).body;
    expect(seen).toMatchObject({ pendingLogs: 11, pendingBytes: status.pendingBytes, logBytes: status.logBytes });
  });

  it('count the disks that replicate when the first one has no base yet', async () => {
    const agent = new SimAgent(svc, await enrolledAgent(svc, 'acme', '*', 'hv2.acme.example'), 'late');
    await agent.register([{ id: 'a0', virtualSize: 4 * MiB }, { id: 'b1', virtualSize: 4 * MiB }]);
    const s = Buffer.alloc(4 * MiB);
    await agent.commitBase('b1', 1, 'full', s, [scribble(s, [[0, 64 * KiB]])]);
    await merger.merge();
    const sizes = await shipLogs(agent, 'b1', s, 4, 8 * KiB);
    const vm = (await getVm(svc.ctx.db, 'acme', 'late'))!;
    const status = await vmStatus(svc.ctx.db, vm, new Date(Date.now() + 150_000));
    expect(status.cycles).toEqual({ expected: 5, successful: 4, missed: 1 });
    expect(status.logBytes.largest).toBe(Math.max(...sizes));
    expect(status.pendingLogs).toBe(4);
  });
});
