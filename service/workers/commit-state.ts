/**
 * The durable step of a merge: state.json beside the replica is written (fenced) and the catalog is
 * made to follow it. Shared by the base and log paths of merge-job.ts.
 */
import { setDiskState } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import type { DiskRef } from '../queue.js';
import type { AppliedState } from '../replication/replica.js';
import { readState, writeState } from '../replication/replica.js';

export interface MergeFence {
  fence: number;
  stillHeld(): Promise<boolean>;
}

export class LockLostError extends Error {
  readonly code = 'lock_lost';
}

/**
 * Writes the applied state durably (the authority), unless a newer lock holder already wrote one, then
 * makes the catalog follow it.
 */
export async function commitState(ctx: ServiceContext, ref: DiskRef, dir: string, next: AppliedState, lock: MergeFence, appliedAt: Date | null = null): Promise<void> {
  const current = await readState(dir);
  if (current.fence > lock.fence || !(await lock.stillHeld())) throw new LockLostError(`merge of ${ref.tenant}/${ref.vm}/${ref.disk}: a newer worker holds the disk`);
  await writeState(dir, next);
  await follow(ctx, ref, next, appliedAt);
}

/** The catalog follows the applied state written beside the replica. */
export async function follow(ctx: ServiceContext, ref: DiskRef, s: AppliedState, appliedAt: Date | null): Promise<void> {
  await setDiskState(ctx.db, ref.tenant, ref.vm, ref.disk, {
    generation: s.generation, baseComplete: s.baseComplete, appliedSequence: s.appliedSequence, state: s.state, resyncReason: s.resyncReason, lastAppliedAt: appliedAt,
  });
}
