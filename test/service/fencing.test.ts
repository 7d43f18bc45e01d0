/**
 * Fencing of state.json (service/workers/commit-state.ts) against real Redis: a holder whose lock
 * lapsed, or one whose token is older than the one already in state.json, cannot replace it, leaves
 * no temporary file behind, and the newer holder's state stays what readers see.
 */
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initialState, readState, writeState } from '../../service/replication/replica.js';
import { LockLostError, writeFencedState } from '../../service/workers/commit-state.js';
import { acquireLock } from '../../service/workers/lock.js';
import { scratchDir } from '../helpers.js';

let redis: Redis;
let scratch: Awaited<ReturnType<typeof scratchDir>>;
const prefix = `lbfence-${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  redis = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: null });
  scratch = await scratchDir('lifeboat-fence-');
});
afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
  await scratch.remove();
});

async function replica(name: string): Promise<string> {
  const dir = `${scratch.path}/${name}`;
  await writeState(dir, initialState('raw'));
  return dir;
}

describe('state.json fencing', () => {
  it('refuses a holder whose lock lapsed after a newer holder committed; the newer state stays', async () => {
    const dir = await replica('lapsed');
    const old = (await acquireLock(redis, 'lapsed', 60, prefix))!;
    expect(old).toBeDefined();
    await new Promise((r) => setTimeout(r, 120)); // the old holder pauses past its TTL
    const fresh = (await acquireLock(redis, 'lapsed', 60_000, prefix))!;
    expect(fresh.fence).toBeGreaterThan(old.fence);
    const s = await readState(dir);
    await writeFencedState(dir, { ...s, appliedSequence: 7 }, fresh, 'newer');
    await expect(writeFencedState(dir, { ...s, appliedSequence: 3 }, old, 'stale')).rejects.toBeInstanceOf(LockLostError);
    expect(await readState(dir)).toMatchObject({ appliedSequence: 7, fence: fresh.fence });
    expect((await readdir(dir)).filter((f) => f.includes('.tmp-'))).toEqual([]);
    await fresh.release();
  });

  it('refuses a token older than the one in state.json even while the lock answers held', async () => {
    const dir = await replica('older');
    const s = await readState(dir);
    await writeFencedState(dir, { ...s, appliedSequence: 5 }, { fence: 9, stillHeld: async () => true }, 'newer');
    let asked = false;
    const stale = { fence: 8, stillHeld: async () => (asked = true) };
    await expect(writeFencedState(dir, { ...s, appliedSequence: 4 }, stale, 'stale')).rejects.toThrow(/token 9, newer than ours \(8\)/);
    expect(asked).toBe(false);
    expect(await readState(dir)).toMatchObject({ appliedSequence: 5, fence: 9 });
  });

  it('checks the lock after the new state is durable, right before the rename', async () => {
    const dir = await replica('order');
    const s = await readState(dir);
    let seenAtCheck: string[] = [];
    const lock = {
      fence: 3,
      async stillHeld() {
        seenAtCheck = await readdir(dir);
        return true;
      },
    };
    const written = await writeFencedState(dir, { ...s, appliedSequence: 2, fence: 0 }, lock, 'order');
    // The prepared file existed when the lock was asked, and the state carries the holder's token.
    expect(seenAtCheck.some((f) => f.startsWith('state.json.tmp-'))).toBe(true);
    expect(written.fence).toBe(3);
    expect(await readState(dir)).toMatchObject({ appliedSequence: 2, fence: 3 });
    expect((await readdir(dir)).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('recovers when Redis lost the token counter: the refused holder raises it past the file\'s token', async () => {
    const dir = await replica('lost');
    const first = (await acquireLock(redis, 'lost', 60_000, prefix))!;
    const s = await readState(dir);
    await writeFencedState(dir, { ...s, appliedSequence: 2 }, first, 'first');
    await first.release();
    await redis.set(`${prefix}:fence:lost`, '0'); // as after a Redis restart without its data
    const behind = (await acquireLock(redis, 'lost', 60_000, prefix))!;
    expect(behind.fence).toBeLessThan(first.fence + 1);
    await expect(writeFencedState(dir, { ...s, appliedSequence: 3 }, behind, 'behind')).rejects.toBeInstanceOf(LockLostError);
    await behind.release();
    const next = (await acquireLock(redis, 'lost', 60_000, prefix))!;
    expect(next.fence).toBeGreaterThan(first.fence);
    await writeFencedState(dir, { ...s, appliedSequence: 3 }, next, 'next');
    expect(await readState(dir)).toMatchObject({ appliedSequence: 3, fence: next.fence });
    await next.release();
  });

  it('a lock lost to expiry is not extended by stillHeld, and a held one is', async () => {
    const lock = (await acquireLock(redis, 'lease', 200, prefix))!;
    expect(await lock.stillHeld()).toBe(true);
    expect(await redis.pttl(`${prefix}:lock:lease`)).toBeGreaterThan(100);
    await redis.del(`${prefix}:lock:lease`);
    expect(await lock.stillHeld()).toBe(false);
    expect(await redis.exists(`${prefix}:lock:lease`)).toBe(0);
  });
});
