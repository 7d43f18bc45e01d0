/**
 * The durable step of a merge, a point or a prune: state.json beside the replica is replaced under
 * the disk's fencing token (writeFencedState) and the catalog is made to follow it. Shared by the
 * base and log paths of merge-job.ts and by points-job.ts.
 *
 * Fencing (docs/service.md "Fencing"): the new state carries the holder's token. The slow part (the
 * temporary file written and fsynced) comes first; then, with nothing slow in between, state.json's
 * token is compared with ours (a newer holder's state is never replaced), the Redis lock is checked
 * to still hold our token and extended to a full TTL in one Lua call, and the file is renamed over
 * state.json. A holder that lost its lock, or that finds a newer token on disk, removes its file and
 * throws LockLostError; nothing it prepared becomes visible. A holder frozen past its lease between
 * the lease check and the rename is covered by the replica directory's kernel lock, which the caller
 * took with the Redis lock (lock.ts) and which no newer holder gets while the frozen one lives.
 */
import { rm } from 'node:fs/promises';
import { setDiskState } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import type { DiskRef } from '../queue.js';
import type { AppliedState } from '../replication/replica.js';
import { installState, prepareState, readState } from '../replication/replica.js';

export interface MergeFence {
  fence: number;
  /** True, and the lease extended to a full TTL, while this holder's token is the lock's value. */
  stillHeld(): Promise<boolean>;
  /** Told of a newer token found in state.json (see lock.ts). */
  observe?(fence: number): Promise<void>;
}

export class LockLostError extends Error {
  readonly code = 'lock_lost';
}

/**
 * Replaces state.json with next (its fence set to the holder's token) unless the lock was lost or a
 * newer holder already wrote one; what is written is exactly what a later reader sees.
 */
/** Holders that have committed once: a later commit of theirs finds their own token in the file. */
const committed = new WeakSet<MergeFence>();

export async function writeFencedState(dir: string, next: AppliedState, lock: MergeFence, what: string): Promise<AppliedState> {
  const state: AppliedState = { ...next, fence: lock.fence };
  const tmp = await prepareState(dir, state);
  try {
    const current = await readState(dir);
    if (current.fence > lock.fence || (current.fence === lock.fence && !committed.has(lock))) {
      // Either a newer holder committed, or Redis lost the token counter (a token can then come
      // back, so the same token is refused too unless this holder wrote it): raise the counter past
      // the file's token so the next holder can commit again (this run stops either way).
      await lock.observe?.(current.fence);
      throw new LockLostError(`${what}: state.json carries fencing token ${current.fence}, ${current.fence > lock.fence ? 'newer than' : 'the same as'} ours (${lock.fence})`);
    }
    if (!(await lock.stillHeld())) throw new LockLostError(`${what}: the lock lapsed (fencing token ${lock.fence})`);
    await installState(dir, tmp);
    committed.add(lock);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  return state;
}

/**
 * Writes the applied state durably (the authority), unless a newer lock holder already wrote one, then
 * makes the catalog follow it.
 */
export async function commitState(ctx: ServiceContext, ref: DiskRef, dir: string, next: AppliedState, lock: MergeFence, appliedAt: Date | null = null): Promise<void> {
  await writeFencedState(dir, next, lock, `merge of ${ref.tenant}/${ref.vm}/${ref.disk}`);
  await follow(ctx, ref, next, appliedAt);
}

/** The catalog follows the applied state written beside the replica. */
export async function follow(ctx: ServiceContext, ref: DiskRef, s: AppliedState, appliedAt: Date | null): Promise<void> {
  await setDiskState(ctx.db, ref.tenant, ref.vm, ref.disk, {
    generation: s.generation, baseComplete: s.baseComplete, appliedSequence: s.appliedSequence, appliedCycle: s.appliedCycle, state: s.state, resyncReason: s.resyncReason, lastAppliedAt: appliedAt,
  });
}
