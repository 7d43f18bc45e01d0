/**
 * Step `base ahead` of a merge run (same queue and lock as merge-job.ts): the committed chunks of a
 * full base whose agent is still sending the rest are written, in chunk order, into the layer the
 * base will become (`base-g<N>.<fmt>`), so that when the agent completes the base only the chunks
 * committed since are left to apply (base-job.ts resumes there) and the replica's point exists soon
 * after the acknowledgement instead of one whole base-apply later.
 *
 * Input: the disk, its applied state; the pending chunk rows of the newest generation newer than the
 *   state's that has no completed base yet (no `bases` row, or a pending one).
 * Output: the layer holds chunks 0..k-1, flushed, and its record `base-g<N>.<fmt>.ahead` (written
 *   atomically after the flush) says k and the cycle their headers agree on. Nothing else changes:
 *   state.json and the catalog are the base step's, after the base is complete.
 * Failure codes: a chunk failing its checks, or a base that is not full (a delta base writes into the
 *   live top layer, so never before it is complete): the layer and its record are deleted and
 *   nothing more is done ahead for that generation in this process; the completed base's apply
 *   refuses or applies it as before.
 * Idempotent: chunks are written in order and a chunk rewritten writes the same bytes; what a killed
 *   run wrote past its record is written again from the record's k. A record with no layer, or a
 *   layer with no record (a run killed before its first record), is swept (replica.ts) and the
 *   base is built from chunk 0.
 */
import { open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { createDisk, openDisk } from '../../shared/disk/index.js';
import type { DiskImage } from '../../shared/disk/index.js';
import type { RecipientKeys } from '../../shared/crypto/keys.js';
import { isLifeboatError } from '../../shared/errors.js';
import type { LogRow } from '../catalog/logs.js';
import { logColumns } from '../catalog/logs.js';
import type { ServiceContext } from '../context.js';
import type { DiskRef } from '../queue.js';
import type { AppliedState } from '../replication/replica.js';
import type { StagedLog } from '../../shared/log/stage.js';
import { applyStaged, discardStaged, stageLog } from '../../shared/log/stage.js';
import { ErrTampered } from '../../shared/errors.js';

/** Chunks of a full base staged ahead of the one being written into the new layer. */
export const BaseStageAhead = 2;

/** The record beside a base layer under way: how many chunks it holds and the cycle they agree on. */
const aheadSchema = z.strictObject({
  version: z.literal(1),
  generation: z.number().int().min(1),
  chunks: z.number().int().min(0),
  virtualSize: z.number().int().min(0),
  /** The cycle every chunk so far carries (null: they disagree, or carry none). */
  cycle: z.number().int().min(1).nullable(),
  capturedMs: z.number().nullable(),
});
export type AheadRecord = z.infer<typeof aheadSchema>;

export const aheadFile = (layer: string) => `${layer}.ahead`;

/** The record of layer in dir, or undefined when there is none or it does not parse. */
export async function readAhead(dir: string, layer: string): Promise<AheadRecord | undefined> {
  const text = await readFile(join(dir, aheadFile(layer)), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    const r = aheadSchema.safeParse(JSON.parse(text));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

/** Replaces the record atomically; called only after the layer holding its chunks was flushed. */
async function writeAhead(dir: string, layer: string, record: AheadRecord): Promise<void> {
  const path = join(dir, aheadFile(layer));
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(record)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

/** Deletes a base layer under way and its record. */
export async function dropAhead(dir: string, layer: string): Promise<void> {
  await rm(join(dir, layer), { force: true });
  await dropAheadRecord(dir, layer);
}

/** Deletes only the record: the layer is whole and about to be named by state.json. */
export async function dropAheadRecord(dir: string, layer: string): Promise<void> {
  await rm(join(dir, aheadFile(layer)), { force: true });
  await rm(join(dir, `${aheadFile(layer)}.tmp`), { force: true });
}

/**
 * Stages chunks of one base generation, checking each is of the base's mode, and tracks the cycle
 * their authenticated headers agree on (docs/formats/hrl.md "Cycle").
 */
export class ChunkStager {
  /** undefined: no chunk seen yet; null: the chunks disagree or carry none. */
  cycle: number | null | undefined;
  capturedMs: number | null = null;

  constructor(private readonly ctx: ServiceContext, private readonly ref: DiskRef, private readonly generation: number, private readonly mode: 'full' | 'delta',
    private readonly key: RecipientKeys, private readonly staging: string) {}

  /** Starts from what a record says of the chunks before it. */
  resume(record: AheadRecord): void {
    if (record.chunks === 0) return;
    this.cycle = record.cycle;
    this.capturedMs = record.capturedMs;
  }

  async stage(row: LogRow): Promise<StagedLog> {
    const staged = await stageLog({ object: await this.ctx.store.get(row.key), key: this.key, sha256: row.sha256, size: row.size,
      expect: { ...this.ref, generation: this.generation, sequence: row.sequence } }, join(this.staging, `chunk-${row.sequence}`));
    if (staged.header.kind !== this.mode) {
      await discardStaged(staged);
      throw ErrTampered(`chunk ${row.sequence} is a ${staged.header.kind} log, not ${this.mode}`);
    }
    const chunkCycle = staged.header.cycle ?? null;
    this.cycle = this.cycle === undefined || this.cycle === chunkCycle ? chunkCycle : null;
    this.capturedMs ??= staged.header.capturedMs ?? null;
    return staged;
  }
}

/**
 * Writes rows into image in order: the next chunks are staged (read, digested, opened, decompressed:
 * mostly CPU) while one is written into the layer (mostly waiting for the device). On failure the
 * chunks staged ahead release their memory (and staging files) and the error is thrown.
 */
export async function writeChunksInOrder(rows: LogRow[], stager: ChunkStager, image: DiskImage): Promise<void> {
  const ahead: Promise<StagedLog>[] = [];
  let next = 0;
  const stageAhead = () => {
    while (ahead.length < BaseStageAhead && next < rows.length) {
      const p = stager.stage(rows[next++]!);
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
  } catch (err) {
    for (const p of ahead.splice(0)) await p.then(discardStaged, () => undefined);
    throw err;
  }
}

/** Generations seen not to be a full base, or refused, in this process: nothing is done ahead for them again. */
const notAhead = new Set<string>();
const aheadKey = (ref: DiskRef, generation: number) => `${ref.tenant}/${ref.vm}/${ref.disk}/${generation}`;

/** Errors that refuse a chunk (as base-job.ts refuses a base for them). */
export function isRefusal(err: unknown): boolean {
  return isLifeboatError(err) && ['tampered', 'corrupt', 'not_found', 'invalid_argument', 'unsupported'].includes(err.code);
}

/**
 * Writes the committed chunks of a full base still under way into its layer, from where its record
 * stands up to the first chunk not committed yet; returns how many it wrote. The caller holds the
 * disk's lock and has swept unreferenced layers (replica.ts keeps a layer with a record).
 */
export async function applyBaseAhead(ctx: ServiceContext, ref: DiskRef, dir: string, state: AppliedState, key: () => Promise<RecipientKeys>, staging: string, virtualSize: number): Promise<number> {
  const gen = await ctx.db.query<{ generation: number }>(`SELECT max(l.generation)::int8 AS generation FROM logs l WHERE l.tenant = $1 AND l.vm = $2 AND l.disk = $3 AND l.kind = 'chunk'
    AND l.status = 'pending' AND (l.generation > $4 OR (l.generation = $4 AND NOT $5))
    AND NOT EXISTS (SELECT 1 FROM bases b WHERE b.tenant = l.tenant AND b.vm = l.vm AND b.disk = l.disk AND b.generation = l.generation AND b.status <> 'pending')`,
  [ref.tenant, ref.vm, ref.disk, state.generation, state.baseComplete]);
  const generation = gen[0]?.generation === null || gen[0]?.generation === undefined ? undefined : Number(gen[0].generation);
  if (generation === undefined || notAhead.has(aheadKey(ref, generation))) return 0;
  const format = state.layers[0]!.endsWith('.raw') ? 'raw' : 'vhdx';
  const layer = `base-g${generation}.${format}`;
  const record = await readAhead(dir, layer);
  const from = record && record.generation === generation && record.virtualSize === virtualSize ? record.chunks : 0;
  const rows = await ctx.db.query<LogRow>(`SELECT ${logColumns} FROM logs WHERE tenant = $1 AND vm = $2 AND disk = $3 AND kind = 'chunk' AND generation = $4 AND sequence >= $5 ORDER BY sequence`,
    [ref.tenant, ref.vm, ref.disk, generation, from]);
  const ready: LogRow[] = [];
  for (const r of rows) if (r.sequence === from + ready.length) ready.push(r);
  if (ready.length === 0) return 0;

  const stager = new ChunkStager(ctx, ref, generation, 'full', await key(), staging);
  if (record && from > 0) stager.resume(record);
  let image: DiskImage;
  if (from === 0) {
    await dropAhead(dir, layer);
    image = await createDisk(join(dir, layer), format, { virtualSize, type: 'dynamic' });
  } else {
    image = await openDisk(join(dir, layer));
  }
  try {
    await writeChunksInOrder(ready, stager, image);
    await image.flush();
  } catch (err) {
    await image.close();
    if (!isRefusal(err)) throw err;
    // Not a full base, or a chunk that fails its checks: the completed base's apply decides.
    notAhead.add(aheadKey(ref, generation));
    await dropAhead(dir, layer);
    ctx.log.info({ ...ref, generation, reason: (err as Error).message }, 'base not applied ahead of its completion');
    return 0;
  }
  await image.close();
  await writeAhead(dir, layer, { version: 1, generation, chunks: from + ready.length, virtualSize, cycle: stager.cycle ?? null, capturedMs: stager.capturedMs });
  return ready.length;
}
