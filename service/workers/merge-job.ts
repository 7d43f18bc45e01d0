/**
 * Job `merge` (queue "merge", job id per disk: merge.<tenant>.<vm>.<disk>).
 *
 * Input: { tenant, vm, disk }. The caller holds the disk's lock (lock.ts) and passes its fence.
 * Output: every committed log of the disk's current generation that follows the applied sequence
 *   without a gap is applied to the top layer of the replica, in sequence order, in batches
 *   (log-batch.ts); state.json beside the replica and then the catalog record the new applied
 *   sequence after each batch. While a full base of a newer generation is still arriving, its
 *   committed chunks are written ahead into its layer (base-ahead.ts) instead.
 *   Logs of a cycle after the VM's merge barrier (barrier.ts) wait while a point is being cut. A full
 *   base waits while a point of the VM is pinned (it would replace the pinned point's chain).
 * Failure codes: a log that fails the envelope, the .hrl checks, the committed size/digest or names
 *   another disk/generation/sequence → the disk goes to `resync_required` with the reason, the log
 *   row to `rejected`, and nothing of that log is applied (it is staged and verified completely
 *   first). Lost lock → stops before the next durable step (`lock_lost`). I/O errors throw and the
 *   job is retried.
 * Idempotent: state.json is the authority. A log at or below its applied sequence is a duplicate and
 *   only marked so; a crash between applying and writing state re-applies the same logs in order,
 *   which writes the same bytes at the same offsets. A missing sequence stops the run (gaps wait); the next commit
 *   or the periodic sweep starts it again.
 */
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PrivateJwk, RecipientKeys } from '../../shared/crypto/keys.js';
import { tenantPreviousKeys } from '../catalog/keys.js';
import { requireTenant } from '../catalog/tenants.js';
import { getDisk } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import type { DiskRef } from '../queue.js';
import type { AppliedState } from '../replication/replica.js';
import { readState, sweepUnreferencedLayers } from '../replication/replica.js';
import { unwrapReplicaKey } from '../trust/tokens.js';
import type { BaseRow } from './base-job.js';
import { applyBase, pendingBase } from './base-job.js';
import { applyBaseAhead } from './base-ahead.js';
import type { MergeFence } from './commit-state.js';
import { LockLostError, commitState, follow } from './commit-state.js';
import { mergeLogs } from './log-batch.js';
import type { Barrier } from './barrier.js';
import { noBarrier } from './barrier.js';
import { vmHasPins } from '../catalog/pins.js';

export { LockLostError } from './commit-state.js';
export type { MergeFence } from './commit-state.js';

export interface MergeResult {
  applied: number;
  duplicates: number;
  rejected: number;
  appliedSequence: number;
  state: AppliedState['state'];
}

/** Unwrapped replica keys, per context, by their wrapped text (a re-wrap or a rotation is a new entry). */
const replicaKeys = new WeakMap<ServiceContext, Map<string, Promise<PrivateJwk>>>();

function unwrapCached(ctx: ServiceContext, wrapped: string): Promise<PrivateJwk> {
  let cache = replicaKeys.get(ctx);
  if (!cache) replicaKeys.set(ctx, (cache = new Map()));
  let key = cache.get(wrapped);
  if (!key) {
    key = unwrapReplicaKey(ctx.master, wrapped);
    key.catch(() => cache.delete(wrapped));
    cache.set(wrapped, key);
  }
  return key;
}

/**
 * The tenant's replica keys: the current one first, then those a rotation replaced and not yet
 * retired, whose logs (sealed before the agents learned the new key) still open until merged.
 */
export async function replicaKeyRing(ctx: ServiceContext, tenant: string): Promise<PrivateJwk[]> {
  const [t, previous] = await Promise.all([requireTenant(ctx.db, tenant), tenantPreviousKeys(ctx.db, tenant)]);
  return Promise.all([t.replicaPrivateWrapped, ...previous.map((p) => p.privateWrapped)].map((w) => unwrapCached(ctx, w)));
}

/** barrier: the cycle the disk's merge must not pass while a point is being cut (barrier.ts). */
export async function mergeDisk(ctx: ServiceContext, ref: DiskRef, lock: MergeFence, barrier: Barrier = noBarrier): Promise<MergeResult> {
  const result: MergeResult = { applied: 0, duplicates: 0, rejected: 0, appliedSequence: 0, state: 'initial_required' };
  const disk = await getDisk(ctx.db, ref.tenant, ref.vm, ref.disk);
  if (!disk) return result;
  let state = await readState(disk.replicaDir);
  if (disk.generation !== state.generation || disk.appliedSequence !== state.appliedSequence || disk.state !== state.state || disk.baseComplete !== state.baseComplete) {
    await follow(ctx, ref, state, null); // the catalog lagged state.json (a crash between the two)
  }
  const swept = await sweepUnreferencedLayers(disk.replicaDir, state);
  if (swept.length > 0) ctx.log.info({ ...ref, swept }, 'deleted layer files no state names (left by a killed worker)');
  let key: RecipientKeys | undefined;
  const tenantKey = async (): Promise<RecipientKeys> => (key ??= await replicaKeyRing(ctx, ref.tenant));
  // Created only if a log spills out of the memory budget (stage.ts): most merges touch no file here.
  const staging = join(tmpdir(), `lifeboat-merge-${randomUUID()}`);
  try {
    const unpinnedBase = async (): Promise<BaseRow | undefined> => {
      const base = await pendingBase(ctx.db, ref, state);
      if (base?.mode === 'full' && (await vmHasPins(ctx.db, ref.tenant, ref.vm))) {
        // A full base replaces the chain and every point of the VM: not while a point is pinned (a
        // failover reads its layers). The base waits, pending, until the last pin is released.
        ctx.log.warn({ ...ref, generation: base.generation }, 'full base waits: a recovery point of the VM is pinned');
        return undefined;
      }
      return base;
    };
    let base = await unpinnedBase();
    // A full base still arriving: its committed chunks go into its layer as they come (base-ahead.ts),
    // this job going on while more are ready (their commits' jobs are swallowed by this one), and
    // applying the base once it is complete.
    while (!base && (await applyBaseAhead(ctx, ref, disk.replicaDir, state, tenantKey, staging, disk.virtualSize)) > 0) {
      if (!(await lock.stillHeld())) throw new LockLostError(`merge of ${ref.tenant}/${ref.vm}/${ref.disk}: the lock lapsed (fencing token ${lock.fence})`);
      base = await unpinnedBase();
    }
    if (base) state = await mergeBase(ctx, ref, disk.replicaDir, state, base, await tenantKey(), staging, lock, disk.virtualSize);
    result.appliedSequence = state.appliedSequence;
    result.state = state.state;
    if (state.state === 'resync_required' || !state.baseComplete) return result;
    state = await mergeLogs(ctx, ref, disk.replicaDir, state, tenantKey, staging, lock, result, barrier);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  result.appliedSequence = state.appliedSequence;
  result.state = state.state;
  return result;
}

async function mergeBase(ctx: ServiceContext, ref: DiskRef, dir: string, state: AppliedState, base: BaseRow, key: RecipientKeys, staging: string, lock: MergeFence, virtualSize: number): Promise<AppliedState> {
  const format = state.layers[0]!.endsWith('.raw') ? 'raw' : 'vhdx';
  const outcome = await applyBase(ctx, ref, dir, state, base, key, staging, format, virtualSize);
  const where = [ref.tenant, ref.vm, ref.disk, base.generation];
  if (!outcome.ok) {
    const next: AppliedState = { ...state, state: 'resync_required', resyncReason: outcome.reason, fence: lock.fence };
    await commitState(ctx, ref, dir, next, lock);
    await ctx.db.query(`UPDATE bases SET status = 'rejected' WHERE tenant = $1 AND vm = $2 AND disk = $3 AND generation = $4`, where);
    ctx.log.warn({ ...ref, generation: base.generation, reason: outcome.reason }, 'base refused; resynchronization required');
    return next;
  }
  const next = { ...outcome.state, fence: lock.fence };
  await commitState(ctx, ref, dir, next, lock, new Date());
  await ctx.db.query(`UPDATE bases SET status = 'applied' WHERE tenant = $1 AND vm = $2 AND disk = $3 AND generation = $4`, where);
  await ctx.db.query(`UPDATE logs SET status = 'applied', applied_at = now() WHERE tenant = $1 AND vm = $2 AND disk = $3 AND generation = $4 AND kind = 'chunk' AND status = 'pending'`, where);
  // The base's cycle, from its chunks' authenticated headers (chunk commits do not name it), so a
  // point at that cycle finds its capture time.
  if (next.appliedCycle !== null && outcome.capturedMs !== null) {
    await ctx.db.query(`UPDATE logs SET cycle = $5, captured_at = $6 WHERE tenant = $1 AND vm = $2 AND disk = $3 AND generation = $4 AND kind = 'chunk'`, [...where, next.appliedCycle, new Date(outcome.capturedMs)]);
  }
  // A full base replaces the chain, and with it the disk's recovery points.
  if (base.mode === 'full') await ctx.db.query('DELETE FROM recovery_points WHERE tenant = $1 AND vm = $2', [ref.tenant, ref.vm]);
  // Layers the new base replaced: unreferenced once state.json names the new chain.
  for (const old of state.layers) if (!next.layers.includes(old)) await rm(join(dir, old), { force: true });
  return next;
}
