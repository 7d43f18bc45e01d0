/**
 * A per-disk lock in Redis with a fencing token, and with it the kernel's lock on the disk's replica
 * directory (dir-lock.ts). Acquiring takes a fresh token from a counter that only grows (INCR), then
 * SET NX PX with the token as the value, then flock on `<dir>/.lock`; a holder that finds either
 * taken releases what it got and gets undefined. `stillHeld()` is one Lua call that checks the value
 * is still our token and extends the lease to a full TTL; the holder calls it before each step that
 * writes the replica, and commit-state.ts calls it as the last thing before renaming a prepared
 * state.json into place, after comparing the token already in state.json with ours. So a worker that
 * lost its lock (paused past the TTL, or killed) stops before it writes, and a state file written by
 * a newer holder is never replaced by an older one. The kernel lock closes what the lease leaves
 * open: a holder frozen past its TTL still holds it, so no newer holder gets in to write the
 * directory until the frozen one thaws and finishes or dies (docs/service.md "Fencing").
 */
import type { Redis } from 'ioredis';
import type { DirLock } from './dir-lock.js';
import { lockDir } from './dir-lock.js';

export const DefaultLockMs = 120_000;

export interface DiskLock {
  fence: number;
  /** True while this holder's token is the lock's value; extends the TTL when so. */
  stillHeld(): Promise<boolean>;
  /** Drops the directory's kernel lock, then the Redis lock (if still ours). */
  release(): Promise<void>;
  /**
   * Raises the token counter to at least `fence`: called when state.json carries a token the counter
   * has not reached (Redis lost its data), so the next holder's token is newer than the file's again.
   */
  observe(fence: number): Promise<void>;
}

export interface LockOptions {
  ttlMs?: number;
  /** Redis key prefix ('lifeboat'). */
  prefix?: string;
}

const extendScript = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`;
const raiseScript = `local v = tonumber(redis.call('GET', KEYS[1]) or '0') if v < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end return 1`;
const releaseScript = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;

/**
 * Takes the lock named name and the kernel lock of the replica directory dir, or returns undefined
 * when another holder has either. dir null takes the Redis lock alone, for a name that guards no
 * directory; every writer of a replica passes its directory.
 */
export async function acquireLock(redis: Redis, name: string, dir: string | null, options: LockOptions = {}): Promise<DiskLock | undefined> {
  const ttlMs = options.ttlMs ?? DefaultLockMs;
  const prefix = options.prefix ?? 'lifeboat';
  const key = `${prefix}:lock:${name}`;
  const counter = `${prefix}:fence:${name}`;
  const fence = await redis.incr(counter);
  const ok = await redis.set(key, String(fence), 'PX', ttlMs, 'NX');
  if (ok !== 'OK') return undefined;
  const releaseRedis = async () => {
    await redis.eval(releaseScript, 1, key, String(fence));
  };
  let dirLock: DirLock | undefined;
  if (dir !== null) {
    try {
      dirLock = await lockDir(dir);
    } catch (err) {
      await releaseRedis();
      throw err;
    }
    // Held by a holder whose lease lapsed (frozen, or still finishing): give up as if Redis said so.
    if (!dirLock) {
      await releaseRedis();
      return undefined;
    }
  }
  return {
    fence,
    async stillHeld() {
      return Number(await redis.eval(extendScript, 1, key, String(fence), String(ttlMs))) === 1;
    },
    async release() {
      // The kernel lock first: a holder that takes the Redis lock next then finds the directory free.
      try {
        await dirLock?.release();
      } finally {
        await releaseRedis();
      }
    },
    async observe(seen: number) {
      await redis.eval(raiseScript, 1, counter, String(seen));
    },
  };
}
