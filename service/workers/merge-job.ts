/**
 * Job `merge` (queue "merge", job id per disk: merge.<tenant>.<vm>.<disk>).
 *
 * Input: { tenant, vm, disk }. The caller holds the disk's lock (lock.ts) and passes its fence.
 * Output: every committed log of the disk's current generation that follows the applied sequence
 *   without a gap is applied to the top layer of the replica, in sequence order; state.json beside
 *   the replica and then the catalog record the new applied sequence after each log.
 * Failure codes: a log that fails the envelope, the .hrl checks, the committed size/digest or names
 *   another disk/generation/sequence → the disk goes to `resync_required` with the reason, the log
 *   row to `rejected`, and nothing of that log is applied (it is staged and verified completely
 *   first). Lost lock → stops before the next durable step (`lock_lost`). I/O errors throw and the
 *   job is retried.
 * Idempotent: state.json is the authority. A log at or below its applied sequence is a duplicate and
 *   only marked so; a crash between applying and writing state re-applies the same log, which writes
 *   the same bytes at the same offsets. A missing sequence stops the run (gaps wait); the next commit
 *   or the periodic sweep starts it again.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDisk } from '../../shared/disk/index.js';
import type { PrivateJwk } from '../../shared/crypto/keys.js';
import { isLifeboatError } from '../../shared/errors.js';
import type { LogRow } from '../catalog/logs.js';
import { pendingLogs, setLogStatus } from '../catalog/logs.js';
import { requireTenant } from '../catalog/tenants.js';
import { getDisk, setDiskState } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import type { DiskRef } from '../queue.js';
import type { AppliedState } from '../replication/replica.js';
import { readState, writeState } from '../replication/replica.js';
import { unwrapReplicaKey } from '../trust/tokens.js';
import { applyStaged, discardStaged, stageLog } from './stage.js';
import type { BaseRow } from './base-job.js';
import { applyBase, pendingBase } from './base-job.js';

export interface MergeFence {
  fence: number;
  stillHeld(): Promise<boolean>;
}

export interface MergeResult {
  applied: number;
  duplicates: number;
  rejected: number;
  appliedSequence: number;
  state: AppliedState['state'];
}

/** Tenants' unwrapped replica keys, per context: a key never changes for a tenant within v1. */
const replicaKeys = new WeakMap<ServiceContext, Map<string, Promise<PrivateJwk>>>();

function replicaKey(ctx: ServiceContext, tenant: string): Promise<PrivateJwk> {
  let cache = replicaKeys.get(ctx);
  if (!cache) replicaKeys.set(ctx, (cache = new Map()));
  let key = cache.get(tenant);
  if (!key) {
    key = requireTenant(ctx.db, tenant).then((t) => unwrapReplicaKey(ctx.masterKey, t.replicaPrivateWrapped));
    key.catch(() => cache.delete(tenant));
    cache.set(tenant, key);
  }
  return key;
}

export class LockLostError extends Error {
  readonly code = 'lock_lost';
}

export async function mergeDisk(ctx: ServiceContext, ref: DiskRef, lock: MergeFence): Promise<MergeResult> {
  const result: MergeResult = { applied: 0, duplicates: 0, rejected: 0, appliedSequence: 0, state: 'initial_required' };
  const disk = await getDisk(ctx.db, ref.tenant, ref.vm, ref.disk);
  if (!disk) return result;
  let state = await readState(disk.replicaDir);
  if (disk.generation !== state.generation || disk.appliedSequence !== state.appliedSequence || disk.state !== state.state || disk.baseComplete !== state.baseComplete) {
    await follow(ctx, ref, state, null); // the catalog lagged state.json (a crash between the two)
  }
  let key: PrivateJwk | undefined;
  const tenantKey = async () => (key ??= await replicaKey(ctx, ref.tenant));
  const staging = await mkdtemp(join(tmpdir(), 'lifeboat-merge-'));
  try {
    const base = await pendingBase(ctx.db, ref, state);
    if (base) state = await mergeBase(ctx, ref, disk.replicaDir, state, base, await tenantKey(), staging, lock, disk.virtualSize);
    result.appliedSequence = state.appliedSequence;
    result.state = state.state;
    if (state.state === 'resync_required' || !state.baseComplete) return result;
    for (const row of await pendingLogs(ctx.db, ref.tenant, ref.vm, ref.disk, 'log', state.generation)) {
      if (row.sequence <= state.appliedSequence) {
        await setLogStatus(ctx.db, row, 'skipped', 'duplicate of an applied sequence');
        ctx.metrics.merges.inc({ outcome: 'duplicate' });
        result.duplicates++;
        continue;
      }
      if (row.sequence !== state.appliedSequence + 1) break; // a gap: wait for the missing log
      const next = await mergeOne(ctx, ref, disk.replicaDir, state, row, await tenantKey(), join(staging, `${row.sequence}.staged`), lock);
      state = next.state;
      if (next.rejected) {
        result.rejected++;
        break;
      }
      result.applied++;
    }
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  result.appliedSequence = state.appliedSequence;
  result.state = state.state;
  return result;
}

async function mergeBase(ctx: ServiceContext, ref: DiskRef, dir: string, state: AppliedState, base: BaseRow, key: PrivateJwk, staging: string, lock: MergeFence, virtualSize: number): Promise<AppliedState> {
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
  // A full base replaces the chain, and with it the disk's recovery points.
  if (base.mode === 'full') await ctx.db.query('DELETE FROM recovery_points WHERE tenant = $1 AND vm = $2', [ref.tenant, ref.vm]);
  // Layers the new base replaced: unreferenced once state.json names the new chain.
  for (const old of state.layers) if (!next.layers.includes(old)) await rm(join(dir, old), { force: true });
  return next;
}

async function mergeOne(ctx: ServiceContext, ref: DiskRef, dir: string, state: AppliedState, row: LogRow, key: PrivateJwk, stagingPath: string, lock: MergeFence): Promise<{ state: AppliedState; rejected: boolean }> {
  const where = `log ${row.generation}/${row.sequence} of ${ref.tenant}/${ref.vm}/${ref.disk}`;
  let staged;
  try {
    staged = await stageLog({ object: await ctx.store.get(row.key), key, sha256: row.sha256, size: row.size, expect: { ...ref, generation: row.generation, sequence: row.sequence } }, stagingPath);
  } catch (err) {
    if (!isLifeboatError(err) || !['tampered', 'corrupt', 'not_found', 'invalid_argument', 'unsupported'].includes(err.code)) throw err;
    if (!(await lock.stillHeld())) throw new LockLostError(`${where}: lock lost`);
    const next: AppliedState = { ...state, state: 'resync_required', resyncReason: `${where} refused: ${err.message}`, fence: lock.fence };
    await commitState(ctx, ref, dir, next, lock);
    await setLogStatus(ctx.db, row, 'rejected', err.message);
    ctx.metrics.merges.inc({ outcome: 'rejected' });
    ctx.log.warn({ ...ref, generation: row.generation, sequence: row.sequence, err: err.message }, 'log refused; resynchronization required');
    return { state: next, rejected: true };
  }
  try {
    if (!(await lock.stillHeld())) throw new LockLostError(`${where}: lock lost`);
    const image = await openDisk(join(dir, state.layers.at(-1)!));
    try {
      if (staged.header.virtualSize > image.virtualSize) await image.resize(staged.header.virtualSize);
      await applyStaged(staged, image);
      await image.flush();
    } finally {
      await image.close();
    }
  } finally {
    await discardStaged(staged);
  }
  const next: AppliedState = { ...state, appliedSequence: row.sequence, fence: lock.fence };
  await commitState(ctx, ref, dir, next, lock, new Date());
  await setLogStatus(ctx.db, row, 'applied');
  ctx.metrics.merges.inc({ outcome: 'applied' });
  ctx.metrics.commitToApplied.observe((Date.now() - row.committedAt.getTime()) / 1000);
  return { state: next, rejected: false };
}

/**
 * Writes the applied state durably (the authority), unless a newer lock holder already wrote one, then
 * makes the catalog follow it.
 */
async function commitState(ctx: ServiceContext, ref: DiskRef, dir: string, next: AppliedState, lock: MergeFence, appliedAt: Date | null = null): Promise<void> {
  const current = await readState(dir);
  if (current.fence > lock.fence || !(await lock.stillHeld())) throw new LockLostError(`merge of ${ref.tenant}/${ref.vm}/${ref.disk}: a newer worker holds the disk`);
  await writeState(dir, next);
  await follow(ctx, ref, next, appliedAt);
}

/** The catalog follows the applied state written beside the replica. */
async function follow(ctx: ServiceContext, ref: DiskRef, s: AppliedState, appliedAt: Date | null): Promise<void> {
  await setDiskState(ctx.db, ref.tenant, ref.vm, ref.disk, {
    generation: s.generation, baseComplete: s.baseComplete, appliedSequence: s.appliedSequence, state: s.state, resyncReason: s.resyncReason, lastAppliedAt: appliedAt,
  });
}
