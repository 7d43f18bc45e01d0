/**
 * A per-disk lock in Redis with a fencing token. Acquiring takes a fresh token from a counter that
 * only grows (INCR), then SET NX PX with the token as the value. `stillHeld()` is one Lua call that
 * checks the value is still our token and extends the lease to a full TTL; the holder calls it before
 * each step that writes the replica, and commit-state.ts calls it as the last thing before renaming a
 * prepared state.json into place, after comparing the token already in state.json with ours. So a
 * worker that lost its lock (paused past the TTL, or killed) stops before it writes, and a state file
 * written by a newer holder is never replaced by an older one (docs/service.md "Fencing").
 */
import type { Redis } from 'ioredis';

export const DefaultLockMs = 120_000;

export interface DiskLock {
  fence: number;
  /** True while this holder's token is the lock's value; extends the TTL when so. */
  stillHeld(): Promise<boolean>;
  release(): Promise<void>;
  /**
   * Raises the token counter to at least `fence`: called when state.json carries a token the counter
   * has not reached (Redis lost its data), so the next holder's token is newer than the file's again.
   */
  observe(fence: number): Promise<void>;
}

const extendScript = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`;
const raiseScript = `local v = tonumber(redis.call('GET', KEYS[1]) or '0') if v < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end return 1`;
const releaseScript = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;

/** Takes the lock named name, or returns undefined when another holder has it. */
export async function acquireLock(redis: Redis, name: string, ttlMs = DefaultLockMs, prefix = 'lifeboat'): Promise<DiskLock | undefined> {
  const key = `${prefix}:lock:${name}`;
  const counter = `${prefix}:fence:${name}`;
  const fence = await redis.incr(counter);
  const ok = await redis.set(key, String(fence), 'PX', ttlMs, 'NX');
  if (ok !== 'OK') return undefined;
  return {
    fence,
    async stillHeld() {
      return Number(await redis.eval(extendScript, 1, key, String(fence), String(ttlMs))) === 1;
    },
    async release() {
      await redis.eval(releaseScript, 1, key, String(fence));
    },
    async observe(seen: number) {
      await redis.eval(raiseScript, 1, counter, String(seen));
    },
  };
}
