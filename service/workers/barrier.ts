/**
 * The per-VM merge barrier (docs/service.md, "Recovery points"): while a point of a VM is being cut
 * at cycle C, merges of its disks apply no log of a cycle after C, so the disks that lag can catch up
 * to C while the others wait there, and every disk is then frozen at C under all the disks' locks.
 *
 * The barrier is a Redis key holding C with a lease (it guards nothing durable: a barrier lost with
 * Redis only means a disk may pass C, which the cutter sees under the locks and answers by choosing a
 * newer cycle). A merge reads it before each log; a merge that read it just before it was raised is
 * over once the cutter has taken that disk's lock, which it does before it freezes anything.
 */
import type { Redis } from 'ioredis';

/** The cycle merges must not pass, or null when no point is being cut. */
export type Barrier = () => Promise<number | null>;

export const noBarrier: Barrier = async () => null;

export function barrierKey(prefix: string, tenant: string, vm: string): string {
  return `${prefix}:barrier:${tenant}.${vm}`;
}

/** The barrier of one VM as merges read it. */
export function vmBarrier(redis: Redis, prefix: string, tenant: string, vm: string): Barrier {
  const key = barrierKey(prefix, tenant, vm);
  return async () => {
    const v = await redis.get(key);
    return v === null ? null : Number(v);
  };
}

// Raise at ARGV[1] unless a barrier at ARGV[2] or above already stands (another cutter's, reachable:
// every disk is at or below it); returns the barrier in force, with its lease renewed.
const raiseScript = `local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v >= tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3]) return tonumber(ARGV[1])`;
const dropScript = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;

/**
 * Raises the VM's barrier at cycle, or joins one already standing at or above floor (the newest cycle
 * any disk of the VM applied: a barrier below it can no longer be reached and is replaced). Returns
 * the cycle in force, which the caller cuts at.
 */
export async function raiseBarrier(redis: Redis, prefix: string, tenant: string, vm: string, cycle: number, floor: number, ttlMs: number): Promise<number> {
  return Number(await redis.eval(raiseScript, 1, barrierKey(prefix, tenant, vm), String(cycle), String(floor), String(Math.max(1, Math.ceil(ttlMs)))));
}

/** Drops the VM's barrier if it still stands at cycle (a newer cutter's is left alone). */
export async function dropBarrier(redis: Redis, prefix: string, tenant: string, vm: string, cycle: number): Promise<void> {
  await redis.eval(dropScript, 1, barrierKey(prefix, tenant, vm), String(cycle));
}
