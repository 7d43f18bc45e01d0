/**
 * Step `base` of a merge run (same queue and lock as merge-job.ts): applies a completed initial copy
 * or delta base of a newer generation.
 *
 * Input: the disk, its applied state, and the pending `bases` row of a generation newer than the
 *   state's (or equal to it while its base is incomplete).
 * Output: full → the chunks written into a new base layer, which replaces the chain; delta → the
 *   chunks written into the top layer. Then state.json = { generation, baseComplete, sequence 0,
 *   replicating }, and the catalog follows.
 * Failure codes: any chunk failing its checks (envelope, .hrl, digest, names, kind ≠ mode) → nothing
 *   applied (full: the new layer is deleted; delta: every chunk is staged and verified before the
 *   first is applied), base row `rejected`, disk `resync_required` with the reason.
 * Idempotent: the new base layer has a name per generation and is recreated from scratch on a
 *   retry; state.json switches to it in one atomic write; a retried delta writes the same bytes.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createDisk, openDisk } from '../../shared/disk/index.js';
import type { RecipientKeys } from '../../shared/crypto/keys.js';
import { ErrTampered, isLifeboatError } from '../../shared/errors.js';
import type { Queryable } from '../catalog/db.js';
import type { LogRow } from '../catalog/logs.js';
import { logColumns } from '../catalog/logs.js';
import type { ServiceContext } from '../context.js';
import type { DiskRef } from '../queue.js';
import type { AppliedState } from '../replication/replica.js';
import type { StagedLog } from '../../shared/log/stage.js';
import { applyStaged, discardStaged, stageLog } from '../../shared/log/stage.js';

/** Chunks of a full base staged ahead of the one being written into the new layer. */
export const BaseStageAhead = 2;

export interface BaseRow {
  generation: number;
  mode: 'full' | 'delta';
  chunkCount: number;
  consistency: string;
}

/** The newest pending base that is newer than the applied state, if any. */
export async function pendingBase(db: Queryable, ref: DiskRef, state: AppliedState): Promise<BaseRow | undefined> {
  const rows = await db.query<BaseRow>(`SELECT generation, mode, chunk_count AS "chunkCount", consistency FROM bases
    WHERE tenant = $1 AND vm = $2 AND disk = $3 AND status = 'pending' AND (generation > $4 OR (generation = $4 AND NOT $5)) ORDER BY generation DESC LIMIT 1`,
  [ref.tenant, ref.vm, ref.disk, state.generation, state.baseComplete]);
  return rows[0];
}

async function chunks(db: Queryable, ref: DiskRef, base: BaseRow): Promise<LogRow[]> {
  return db.query<LogRow>(`SELECT ${logColumns}
    FROM logs WHERE tenant = $1 AND vm = $2 AND disk = $3 AND kind = 'chunk' AND generation = $4 AND sequence < $5 ORDER BY sequence`,
  [ref.tenant, ref.vm, ref.disk, base.generation, base.chunkCount]);
}

/** ok: the state to commit and the base's capture time (ms, when its chunks agree on a cycle). */
export type BaseOutcome = { ok: true; state: AppliedState; capturedMs: number | null } | { ok: false; reason: string };

/**
 * Applies base to the replica in dir; returns the state to commit, or the reason it was refused. The
 * caller commits the state (fenced) and marks rows.
 */
export async function applyBase(ctx: ServiceContext, ref: DiskRef, dir: string, state: AppliedState, base: BaseRow, key: RecipientKeys, staging: string, format: 'vhdx' | 'raw', virtualSize: number): Promise<BaseOutcome> {
  const rows = await chunks(ctx.db, ref, base);
  // The cycle the base started in, on every chunk (docs/formats/hrl.md "Cycle"); chunks that disagree,
  // or carry none (an older agent's), leave the disk at no known cycle until its next log.
  let cycle: number | null | undefined;
  let capturedMs: number | null = null;
  const stage = async (row: LogRow): Promise<StagedLog> => {
    const staged = await stageLog({ object: await ctx.store.get(row.key), key, sha256: row.sha256, size: row.size, expect: { ...ref, generation: base.generation, sequence: row.sequence } }, join(staging, `chunk-${row.sequence}`));
    if (staged.header.kind !== base.mode) throw ErrTampered(`chunk ${row.sequence} is a ${staged.header.kind} log, not ${base.mode}`);
    const chunkCycle = staged.header.cycle ?? null;
    cycle = cycle === undefined || cycle === chunkCycle ? chunkCycle : null;
    capturedMs ??= staged.header.capturedMs ?? null;
    return staged;
  };
  const refused = (err: unknown): BaseOutcome => {
    if (isLifeboatError(err) && ['tampered', 'corrupt', 'not_found', 'invalid_argument', 'unsupported'].includes(err.code)) {
      return { ok: false, reason: `base of generation ${base.generation} refused: ${err.message}` };
    }
    throw err;
  };
  if (base.mode === 'delta') {
    const staged: StagedLog[] = [];
    try {
      try {
        for (const row of rows) staged.push(await stage(row));
      } catch (err) {
        return refused(err);
      }
      const image = await openDisk(join(dir, state.layers.at(-1)!));
      try {
        // A disk grown since its last base: the chunks' headers carry the new size (as logs do).
        const size = Math.max(...staged.map((s) => s.header.virtualSize));
        if (size > image.virtualSize) await image.resize(size);
        for (const s of staged) await applyStaged(s, image);
        await image.flush();
      } finally {
        await image.close();
      }
    } finally {
      for (const s of staged) await discardStaged(s);
    }
    return { ok: true, state: { ...state, generation: base.generation, baseComplete: true, appliedSequence: 0, appliedCycle: cycle ?? null, state: 'replicating', resyncReason: null }, capturedMs: cycle ? capturedMs : null };
  }
  const layer = `base-g${base.generation}.${format}`;
  await rm(join(dir, layer), { force: true });
  const image = await createDisk(join(dir, layer), format, { virtualSize, type: 'dynamic' });
  // The next chunks are staged (read, digested, opened, decompressed: mostly CPU) while one is
  // written into the layer (mostly waiting for the device), in chunk order.
  const ahead: Promise<StagedLog>[] = [];
  let next = 0;
  const stageAhead = () => {
    while (ahead.length < BaseStageAhead && next < rows.length) {
      const p = stage(rows[next++]!);
      p.catch(() => undefined); // awaited in turn below, or discarded after a failure
      ahead.push(p);
    }
  };
  try {
    stageAhead();
    while (ahead.length > 0) {
      const staged = await ahead.shift()!;
      stageAhead();
      try {
        await applyStaged(staged, image);
      } finally {
        await discardStaged(staged);
      }
    }
    await image.flush();
  } catch (err) {
    // Chunks staged ahead of the failure release their memory (and staging files).
    for (const p of ahead.splice(0)) await p.then(discardStaged, () => undefined);
    await image.close();
    await rm(join(dir, layer), { force: true });
    return refused(err);
  }
  await image.close();
  return { ok: true, state: { ...state, generation: base.generation, baseComplete: true, appliedSequence: 0, appliedCycle: cycle ?? null, state: 'replicating', resyncReason: null, layers: [layer], points: [] }, capturedMs: cycle ? capturedMs : null };
}
