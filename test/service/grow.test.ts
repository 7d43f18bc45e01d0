/**
 * A disk registered again with a larger virtual size: its replica grows under the disk's lock. When
 * no one holds the disk the registration grows the top layer at once; while a merge (or point, or
 * export) holds it, the registration leaves the layer alone and the disk's next log, whose header
 * carries the new size, grows it under the lock. Either way the replica ends equal to the source.
 */
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDisk } from '../../shared/disk/index.js';
import { mergeJobId } from '../../service/queue.js';
import { acquireLock } from '../../service/workers/lock.js';
import type { Merger } from '../../service/workers/merger.js';
import { readState } from '../../service/replication/replica.js';
import { SimAgent, scribble } from './agent-sim.js';
import type { MergeHarness } from './helpers.js';
import { enrolledAgent, mergeHarness } from './helpers.js';

const MiB = 1 << 20;
let h: MergeHarness | undefined;
let svc: MergeHarness['svc'];
let agent: SimAgent;
let redis: Redis;
let merger: Merger;
let lockPrefix: string;

beforeAll(async () => {
  h = await mergeHarness();
  ({ svc, redis, merger, lockPrefix } = h);
  agent = new SimAgent(svc, await enrolledAgent(svc, 'acme', '*.acme.example', 'hv1.acme.example'), 'grow');
  await agent.register([{ id: 'disk0', virtualSize: 4 * MiB }]);
});
afterAll(async () => {
  await h?.close();
});

const dir = () => join(svc.ctx.config.replicaRoot, 'acme', 'grow', 'disk0');
async function topSize(): Promise<number> {
  const state = await readState(dir());
  const top = await openDisk(join(dir(), state.layers.at(-1)!), { readOnly: true });
  try {
    return top.virtualSize;
  } finally {
    await top.close();
  }
}
const reregister = (virtualSize: number) => agent.call('PUT', '/v1/vms/grow', { disks: [{ id: 'disk0', virtualSize, format: 'raw' }], frequency: '30s', history: 0, appConsistentEvery: 0, compression: 'zstd' });

describe('a disk that grows', () => {
  let source = Buffer.alloc(4 * MiB);

  it('is grown by the registration when nobody holds it, and takes logs beyond its old end', async () => {
    await agent.commitBase('disk0', 1, 'full', source, [scribble(source, [[0, MiB]])]);
    await merger.merge();
    source = Buffer.concat([source, Buffer.alloc(2 * MiB)]);
    expect((await reregister(6 * MiB)).status).toBe(200);
    expect(await topSize()).toBe(6 * MiB);
    await agent.commitLog('disk0', 1, await agent.sealed('disk0', 1, 1, source, scribble(source, [[5 * MiB, 512 * 1024]])));
    await merger.merge();
    expect((await agent.replica('disk0')).equals(source)).toBe(true);
  });

  it('is left alone by the registration while its lock is held, and grown by its next merge', async () => {
    const lock = await acquireLock(redis, mergeJobId({ tenant: 'acme', vm: 'grow', disk: 'disk0' }), dir(), { prefix: lockPrefix });
    expect(lock).toBeDefined();
    try {
      source = Buffer.concat([source, Buffer.alloc(2 * MiB)]);
      expect((await reregister(8 * MiB)).status).toBe(200);
      // The holder's layer kept its size: nothing changed under it.
      expect(await topSize()).toBe(6 * MiB);
      expect((await agent.diskState('disk0')).virtualSize).toBe(8 * MiB);
    } finally {
      await lock!.release();
    }
    await agent.commitLog('disk0', 2, await agent.sealed('disk0', 1, 2, source, scribble(source, [[7 * MiB, MiB]])));
    await merger.merge();
    expect(await topSize()).toBe(8 * MiB);
    expect((await agent.replica('disk0')).equals(source)).toBe(true);
  });

  it('is grown by a delta base of a new generation that carries the larger size', async () => {
    const lock = await acquireLock(redis, mergeJobId({ tenant: 'acme', vm: 'grow', disk: 'disk0' }), dir(), { prefix: lockPrefix });
    try {
      source = Buffer.concat([source, Buffer.alloc(2 * MiB)]);
      expect((await reregister(10 * MiB)).status).toBe(200);
    } finally {
      await lock!.release();
    }
    expect(await topSize()).toBe(8 * MiB);
    await agent.commitBase('disk0', 2, 'delta', source, [scribble(source, [[MiB, 4096], [9 * MiB, 256 * 1024]])]);
    await merger.merge();
    expect(await agent.diskState('disk0')).toMatchObject({ generation: 2, baseComplete: true, state: 'replicating' });
    expect(await topSize()).toBe(10 * MiB);
    expect((await agent.replica('disk0')).equals(source)).toBe(true);
  });
});
