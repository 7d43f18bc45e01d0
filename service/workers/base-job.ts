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
 * Idempotent: the new base layer has a name per generation; chunks written into it ahead of the
 *   base's completion (base-ahead.ts) are kept and the rest written after them, else it is recreated
 *   from scratch; state.json switches to it in one atomic write; a retried delta writes the same bytes.
 */
import { join } from 'node:path';
import { createDisk, openDisk } from '../../shared/disk/index.js';
import type { DiskImage } from '../../shared/disk/index.js';
import type { RecipientKeys } from '../../shared/crypto/keys.js';
import type { Queryable } from '../catalog/db.js';
import type { LogRow } from '../catalog/logs.js';
import { logColumns } from '../catalog/logs.js';
import type { ServiceContext } from '../context.js';
import type { DiskRef } from '../queue.js';
import type { AppliedState } from '../replication/replica.js';
import type { StagedLog } from '../../shared/log/stage.js';
import { applyStaged, discardStaged } from '../../shared/log/stage.js';
import { ChunkStager, dropAhead, dropAheadRecord, isRefusal, readAhead, writeChunksInOrder } from './base-ahead.js';

export { BaseStageAhead } from './base-ahead.js';

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
  const stager = new ChunkStager(ctx, ref, base.generation, base.mode, key, staging);
  const refused = (err: unknown): BaseOutcome => {
    if (isRefusal(err)) return { ok: false, reason: `base of generation ${base.generation} refused: ${(err as Error).message}` };
    throw err;
  };
  const done = (next: Partial<AppliedState>): BaseOutcome => ({
    ok: true, state: { ...state, generation: base.generation, baseComplete: true, appliedSequence: 0, appliedCycle: stager.cycle ?? null, state: 'replicating', resyncReason: null, ...next },
    capturedMs: stager.cycle ? stager.capturedMs : null,
  });
  if (base.mode === 'delta') {
    const staged: StagedLog[] = [];
    try {
      try {
        for (const row of rows) staged.push(await stager.stage(row));
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
    return done({});
  }
  const layer = `base-g${base.generation}.${format}`;
  const { image, from } = await openBaseLayer(ctx, ref, dir, layer, base, virtualSize, stager, format);
  try {
    await writeChunksInOrder(rows.slice(from), stager, image);
    await image.flush();
  } catch (err) {
    await image.close();
    await dropAhead(dir, layer);
    return refused(err);
  }
  await image.close();
  // The layer is whole: its record goes before state.json names it (a crash in between leaves a
  // layer with no record, swept, and the base is applied again from chunk 0).
  await dropAheadRecord(dir, layer);
  return done({ layers: [layer], points: [] });
}

/**
 * The new layer of a full base: the one its chunks were written into ahead of its completion
 * (base-ahead.ts) when its record fits this base, opened to go on from the record's chunk; else a
 * new one from chunk 0. A record fits when it is of this generation and size, and no chunk at or past
 * chunkCount was committed (chunks written ahead are always below the count the agent completes with;
 * this says so rather than trusting it).
 */
async function openBaseLayer(ctx: ServiceContext, ref: DiskRef, dir: string, layer: string, base: BaseRow, virtualSize: number, stager: ChunkStager, format: 'vhdx' | 'raw'): Promise<{ image: DiskImage; from: number }> {
  const record = await readAhead(dir, layer);
  if (record && record.generation === base.generation && record.virtualSize === virtualSize && record.chunks > 0 && record.chunks <= base.chunkCount) {
    const beyond = await ctx.db.query<{ n: number }>(`SELECT count(*)::int8 AS n FROM logs WHERE tenant = $1 AND vm = $2 AND disk = $3 AND kind = 'chunk' AND generation = $4 AND sequence >= $5`,
      [ref.tenant, ref.vm, ref.disk, base.generation, base.chunkCount]);
    if (Number(beyond[0]!.n) === 0) {
      stager.resume(record);
      return { image: await openDisk(join(dir, layer)), from: record.chunks };
    }
  }
  await dropAhead(dir, layer);
  return { image: await createDisk(join(dir, layer), format, { virtualSize, type: 'dynamic' }), from: 0 };
}
