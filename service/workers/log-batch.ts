/**
 * Applying a disk's pending logs in batches (called by merge-job.ts under the disk's lock).
 *
 * Each log is verified completely (stage.ts) before any of it becomes visible, then applied to the
 * top layer, which stays open for the batch: data for blocks the layer does not hold yet is written
 * straight into new blocks of a VHDX top layer as it streams in, and published (BAT entries changed)
 * only after the log verified; the rest is staged and written then. After up to MaxBatchLogs logs, at the end of the
 * run of consecutive sequences, or before a refusal is recorded, the layer is flushed once, state.json
 * records the last applied sequence once (fenced, fsynced) and the catalog marks the batch applied in
 * one statement. Crash-safety: state.json only ever names logs whose bytes are durable; a crash
 * inside a batch leaves it naming the previous batch, and the next run re-applies the logs after it
 * in order, which writes the same bytes at the same offsets.
 *
 * Cycles: each log's authenticated header must name the cycle its commit named (else it is refused as
 * tampered), and state.json records the cycle of the last log applied (appliedCycle). While a point
 * is being cut at cycle C (barrier.ts), a log of a later cycle is left pending: the run stops before
 * it, so every disk of the VM can be frozen at C.
 */
import { join } from 'node:path';
import { openDisk } from '../../shared/disk/index.js';
import type { DiskImage } from '../../shared/disk/index.js';
import type { LogHeader } from '../../shared/log/index.js';
import type { RecipientKeys } from '../../shared/crypto/keys.js';
import { isLifeboatError } from '../../shared/errors.js';
import type { LogRow } from '../catalog/logs.js';
import { markLogsApplied, pendingLogs, setLogStatus } from '../catalog/logs.js';
import type { ServiceContext } from '../context.js';
import type { DiskRef } from '../queue.js';
import type { AppliedState } from '../replication/replica.js';
import { commitState, LockLostError } from './commit-state.js';
import type { MergeFence } from './commit-state.js';
import { applyStaged, discardStaged, stageLog } from '../../shared/log/stage.js';
import type { Barrier } from './barrier.js';
import { noBarrier } from './barrier.js';
import type { DirectSink } from '../../shared/log/stage.js';

/** Logs applied between two durable state writes: bounds what a crash makes the next run redo. */
export const MaxBatchLogs = 32;

const refusedCodes = ['tampered', 'corrupt', 'not_found', 'invalid_argument', 'unsupported'];

export interface LogCounts {
  applied: number;
  duplicates: number;
  rejected: number;
}

/**
 * Applies the pending logs that follow state's applied sequence without a gap, re-reading the
 * catalog after a run so commits that landed meanwhile are merged by this job; returns the state
 * last committed.
 */
export async function mergeLogs(ctx: ServiceContext, ref: DiskRef, dir: string, start: AppliedState, key: () => Promise<RecipientKeys>, staging: string, lock: MergeFence, counts: LogCounts, barrier: Barrier = noBarrier): Promise<AppliedState> {
  let state = start;
  let batch: LogRow[] = [];
  let image: DiskImage | undefined;
  const record = async (): Promise<void> => {
    if (batch.length === 0) return;
    await image!.flush();
    const last = batch.at(-1)!;
    const next: AppliedState = { ...state, appliedSequence: last.sequence, appliedCycle: last.cycle ?? null, fence: lock.fence };
    await commitState(ctx, ref, dir, next, lock, new Date());
    await markLogsApplied(ctx.db, last, batch[0]!.sequence, last.sequence);
    const now = Date.now();
    for (const row of batch) ctx.metrics.commitToApplied.observe((now - row.committedAt.getTime()) / 1000);
    ctx.metrics.merges.inc({ outcome: 'applied' }, batch.length);
    counts.applied += batch.length;
    state = next;
    batch = [];
  };
  try {
    for (let progress = true; progress;) {
      progress = false;
      for (const row of await pendingLogs(ctx.db, ref.tenant, ref.vm, ref.disk, 'log', state.generation)) {
        const through = state.appliedSequence + batch.length;
        if (row.sequence <= through) {
          await setLogStatus(ctx.db, row, 'skipped', 'duplicate of an applied sequence');
          ctx.metrics.merges.inc({ outcome: 'duplicate' });
          counts.duplicates++;
          continue;
        }
        if (row.sequence !== through + 1) break; // a gap: wait for the missing log
        const stopAt = await barrier();
        if (stopAt !== null && row.cycle !== null && row.cycle > stopAt) break; // a point is being cut at stopAt
        const where = `log ${row.generation}/${row.sequence} of ${ref.tenant}/${ref.vm}/${ref.disk}`;
        let staged;
        try {
          image ??= await openDisk(join(dir, state.layers.at(-1)!));
          const top = image;
          // Data of blocks the top layer does not hold yet goes there directly, invisible until applied.
          const direct = async (header: LogHeader): Promise<DirectSink | undefined> => {
            if (!top.freshWrites || header.virtualSize > top.virtualSize) return undefined;
            if (!(await lock.stillHeld())) throw new LockLostError(`${where}: lock lost`);
            return await top.freshWrites();
          };
          staged = await stageLog({ object: await ctx.store.get(row.key), key: await key(), sha256: row.sha256, size: row.size, expect: { ...ref, generation: row.generation, sequence: row.sequence, cycle: row.cycle }, direct }, join(staging, `${row.sequence}.staged`));
        } catch (err) {
          if (!isLifeboatError(err) || !refusedCodes.includes(err.code)) throw err;
          await record();
          return await refuse(ctx, ref, dir, state, row, lock, `${where} refused: ${err.message}`, err.message, counts);
        }
        try {
          if (!(await lock.stillHeld())) throw new LockLostError(`${where}: lock lost`);
          if (staged.header.virtualSize > image.virtualSize) await image.resize(staged.header.virtualSize);
          await applyStaged(staged, image);
        } finally {
          await discardStaged(staged);
        }
        batch.push(row);
        progress = true;
        if (batch.length >= MaxBatchLogs) await record();
      }
      await record();
    }
  } finally {
    await image?.close();
  }
  return state;
}

/** Records a refused log: the disk needs resynchronization, nothing of the log was applied. */
async function refuse(ctx: ServiceContext, ref: DiskRef, dir: string, state: AppliedState, row: LogRow, lock: MergeFence, reason: string, message: string, counts: LogCounts): Promise<AppliedState> {
  if (!(await lock.stillHeld())) throw new LockLostError(`${reason}: lock lost`);
  const next: AppliedState = { ...state, state: 'resync_required', resyncReason: reason, fence: lock.fence };
  await commitState(ctx, ref, dir, next, lock);
  await setLogStatus(ctx.db, row, 'rejected', message);
  ctx.metrics.merges.inc({ outcome: 'rejected' });
  ctx.log.warn({ ...ref, generation: row.generation, sequence: row.sequence, err: message }, 'log refused; resynchronization required');
  counts.rejected++;
  return next;
}
