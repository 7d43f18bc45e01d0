/**
 * The base of a generation: the initial copy of a disk (full) or a resynchronization against the
 * replica's block digests (delta: `--initial existing`, or after any break in continuity). The disk
 * is cut into chunks, each sealed as a base log (sequence = chunk index), uploaded in parallel and
 * committed; finished chunks are recorded in progress.json, so a killed agent resumes without
 * resending them. The chunks' map digests build the scan tracker's baseline, adopted when the service
 * accepted the whole base. With --initial media:DIR the sealed chunks and a manifest go to DIR instead
 * (docs/formats/agent-media.md).
 */
import { stat } from 'node:fs/promises';
import type { DiskImage } from '../../shared/disk/index.js';
import { LifeboatError } from '../../shared/errors.js';
import type { InflightObject, VmConfig, VmProgress } from '../state/schema.js';
import { BlockMapWriter, blockCountOf, randomSeed } from '../tracker/blockmap.js';
import { MapBlockSize } from '../tracker/blockmap.js';
import { hasBit, withBit } from './bitmap.js';
import { DeltaBlockSize, dataRangesOf } from './chunk.js';
import type { EngineContext, ProgressBook } from './context.js';
import type { VmCycle } from './cycle.js';
import { MediaWriter } from './media.js';
import { withRetry } from './retry.js';
import { SealPool } from './seal-pool.js';
import { LostObject, shipInflight } from './ship.js';
import { scanTrackerFor } from './trackers.js';

export const DefaultChunkSize = 8 << 20;
export const DefaultParallelChunks = 4;
/**
 * Sealing threads: two, one per core of a small host. Each reads, digests, compresses and seals its
 * chunk into an output slot shared with this thread, which only uploads, commits and records progress
 * (seal-pool.ts); threads + 2 chunks are in flight. See docs/agent.md for the measurements.
 */
export const DefaultSealThreads = 2;

/**
 * Starts a base of a new generation for the disk (newer than any the service reported), or does
 * nothing when one is already running.
 */
export async function startBase(ctx: EngineContext, book: ProgressBook, diskId: string, disk: DiskImage, mode: 'full' | 'delta', serviceGeneration: number, vmCycle?: VmCycle): Promise<void> {
  const d = book.progress.disks[diskId]!;
  if (d.initial.state === 'running') return;
  const generation = Math.max(d.generation, d.initial.generation, serviceGeneration) + 1;
  const map = await BlockMapWriter.create(ctx.state.mapPath(book.vm, diskId, 'initial'), { seed: randomSeed(), blockCount: blockCountOf(disk.virtualSize) });
  await map.close();
  await book.update((p) => {
    p.disks[diskId]!.initial = {
      state: 'running', mode, generation, virtualSize: disk.virtualSize, chunkSize: DefaultChunkSize, chunksDone: '',
      bytesTotal: disk.virtualSize, bytesDone: 0, bytesSent: 0, cycle: vmCycle?.id ?? null, capturedMs: vmCycle?.capturedMs ?? null,
    };
  });
}

/**
 * Sends (or resumes) the running base; returns the bytes sent. Chunks sealed now carry vmCycle (the
 * engine's current cycle). With a deadline (ctx.now() time in
 * ms), no chunk is started after it: the base stays running, with the chunks done so far recorded,
 * and the next call resumes it.
 */
export async function runBase(ctx: EngineContext, book: ProgressBook, config: VmConfig, diskId: string, disk: DiskImage, deadline?: number, vmCycle?: VmCycle): Promise<number> {
  const vm = config.name;
  const ip = book.progress.disks[diskId]!.initial;
  const { generation, chunkSize, mode, virtualSize } = ip;
  // Every chunk carries the VM cycle it is read in (the engine's; else the one the base started in):
  // a base read within one cycle is at that cycle, one read over several is at none (docs/formats/hrl.md).
  const started = typeof ip.cycle === 'number' && typeof ip.capturedMs === 'number' ? { cycle: ip.cycle, capturedMs: ip.capturedMs } : {};
  const baseCycle = vmCycle ? { cycle: vmCycle.id, capturedMs: vmCycle.capturedMs } : started;
  const committedCycle = baseCycle.cycle !== undefined ? { cycle: baseCycle.cycle, capturedAt: new Date(baseCycle.capturedMs).toISOString() } : {};
  const chunkCount = Math.max(1, Math.ceil(virtualSize / chunkSize));
  const mapPath = ctx.state.mapPath(vm, diskId, 'initial');
  let map = await BlockMapWriter.reopen(mapPath);
  if (!map) {
    // The map of the finished chunks is gone: start the base over rather than trust it.
    map = await BlockMapWriter.create(mapPath, { seed: randomSeed(), blockCount: blockCountOf(virtualSize) });
    await book.update((p) => { Object.assign(p.disks[diskId]!.initial, { chunksDone: '', bytesDone: 0, bytesSent: 0 }); });
  }
  const media = config.initial.mode === 'media' ? new MediaWriter(config.initial.dir, { tenant: ctx.tenant, vm, disk: diskId, generation, mode, chunkCount, virtualSize }) : undefined;
  let sent = 0;
  /** Chunks not yet started (left over when a deadline ended this run). */
  const todo: number[] = [];
  const sealThreads = ctx.sealThreads ?? DefaultSealThreads;
  const pool = new SealPool(sealThreads);
  try {
    // Chunks sealed before a restart go out first, as they were.
    for (const o of book.progress.disks[diskId]!.inflight.filter((x) => x.kind === 'chunk' && x.generation === generation)) {
      try {
        await shipInflight(ctx, vm, diskId, o, config.bandwidthBytesPerSec);
      } catch (err) {
        if (!(err instanceof LostObject)) throw err;
        await dropInflight(book, diskId, o);
        continue;
      }
      await markDone(book, diskId, o, Math.min(chunkSize, virtualSize - o.number * chunkSize));
      sent += o.size;
    }
    for (let i = 0; i < chunkCount; i++) if (!hasBit(book.progress.disks[diskId]!.initial.chunksDone, i)) todo.push(i);
    const seed = map.header.seed;
    const nextChunk = () => (deadline !== undefined && ctx.now().getTime() >= deadline ? undefined : todo.shift());
    const worker = async () => {
      for (let i = nextChunk(); i !== undefined; i = nextChunk()) {
        const start = i * chunkSize;
        const length = Math.min(chunkSize, virtualSize - start);
        const remote = mode === 'delta' ? await remoteDigests(ctx, vm, diskId, start, length) : undefined;
        const createdAt = ctx.now();
        // Read, digested and sealed on a sealing thread; a chunk is at most chunkSize plus framing,
        // held in memory, never spooled (see InflightObject).
        const sealed = await pool.seal({
          diskPath: disk.path, start, length, seed: seed.toString(), remote: remote ? [...remote] : undefined, recipient: ctx.recipient,
          ranges: await dataRangesOf(disk, start, length),
          header: { tenant: ctx.tenant, vm, disk: diskId, generation, sequence: i, virtualSize, consistency: 'crash', compression: config.compression, createdMs: createdAt.getTime(), kind: mode, ...baseCycle },
        });
        // Not fsynced per chunk: digests lost in a crash read as 0 and only make the first cycle
        // resend those blocks (a wrong digest can only cause a resend, never a missed change,
        // unless it collides). The map is fsynced once, before it becomes the baseline.
        await map!.write(start / MapBlockSize, sealed.digests);
        const o: InflightObject = { kind: 'chunk', generation, number: i, spool: '', size: sealed.size, sha256: sealed.sha256, consistency: 'crash', createdAt: createdAt.toISOString(), changedBytes: 0, cycle: null, capturedAt: null, ...committedCycle };
        if (media) {
          await media.writeChunk(o, [sealed.body]);
          pool.recycle(sealed.body);
          await markDone(book, diskId, o, length);
        } else {
          // One progress write per chunk: its inflight record, durable before the upload. The chunk
          // marked done afterwards rides along with the next write (another chunk's record, or the
          // final one): until then the record on disk gets it committed again after a crash, by its
          // recorded digest, without sending it again.
          await book.update((p) => { p.disks[diskId]!.inflight.push(o); });
          await shipInflight(ctx, vm, diskId, o, config.bandwidthBytesPerSec, [sealed.body]);
          pool.recycle(sealed.body);
          book.defer((p) => { applyDone(p, diskId, o, length); });
        }
        sent += o.size;
        const ipNow = book.progress.disks[diskId]!.initial;
        ctx.onInitialProgress?.(vm, diskId, ipNow.bytesDone, ipNow.bytesTotal);
      }
    };
    // With sealing threads, two chunks more than threads: a chunk's progress write and upload (each
    // waits for an fsync) take about as long as sealing it, so with one more chunk than threads the
    // threads sat idle about 40% of the time, waiting for a free chunk; with two they seal on while
    // two chunks are recorded and uploaded.
    const parallel = ctx.parallelChunks ?? (sealThreads > 0 ? sealThreads + 2 : DefaultParallelChunks);
    await Promise.all(Array.from({ length: Math.min(parallel, todo.length) }, worker));
    await map.sync();
  } finally {
    // Chunks marked done since the last write (after a failure too, so a retry skips them).
    await book.persist().catch(() => undefined);
    await pool.close();
    await map.close();
  }

  if (todo.length > 0) {
    ctx.logger.info({ vm, disk: diskId, chunksLeft: todo.length }, 'base paused for the cycle of the other disks; it resumes in the next');
    return sent;
  }
  if (media) await media.finish();
  else await ctx.transport.completeInitial(vm, diskId, { generation, mode, chunkCount, consistency: 'crash', createdAt: ctx.now().toISOString() });
  await scanTrackerFor(ctx.state, vm, diskId).adopt(mapPath);
  // A crash right here (the map adopted, the base not yet recorded done) is finished by recoverAdoptedBase.
  await book.update((p) => { applyBaseDone(p, diskId); });
  return sent;
}

/**
 * Finishes a base the agent completed before it was killed between adopting the base's map as the
 * tracker's baseline (`.map.initial` renamed to `.map`) and recording the base done: every chunk is
 * recorded done, none is in flight, the base's map is gone and a baseline is there. The service is
 * told the base is complete again (a duplicate: adoption follows its first answer) and the base is
 * recorded done; returns whether it was. Without this, runBase found its map gone and started the
 * base over; its chunks, sealed anew, differed from the committed ones, and every later cycle failed
 * ("committed before with another size or digest"). A base shipped on media starts over as before.
 */
export async function recoverAdoptedBase(ctx: EngineContext, book: ProgressBook, config: VmConfig, diskId: string): Promise<boolean> {
  const d = book.progress.disks[diskId]!;
  const ip = d.initial;
  if (ip.state !== 'running' || config.initial.mode === 'media') return false;
  const chunkCount = Math.max(1, Math.ceil(ip.virtualSize / ip.chunkSize));
  for (let i = 0; i < chunkCount; i++) if (!hasBit(ip.chunksDone, i)) return false;
  if (d.inflight.some((o) => o.kind === 'chunk' && o.generation === ip.generation)) return false;
  const exists = (path: string) => stat(path).then(() => true, () => false);
  if ((await exists(ctx.state.mapPath(book.vm, diskId, 'initial'))) || !(await exists(ctx.state.mapPath(book.vm, diskId)))) return false;
  try {
    await withRetry(() => ctx.transport.completeInitial(book.vm, diskId, { generation: ip.generation, mode: ip.mode, chunkCount, consistency: 'crash', createdAt: ctx.now().toISOString() }), ctx.retry);
  } catch (err) {
    // The service does not hold this base complete: the baseline is not this base's; start over.
    if (err instanceof LifeboatError && err.code === 'conflict') return false;
    throw err;
  }
  await book.update((p) => { applyBaseDone(p, diskId); });
  return true;
}

/** Records the running base of the disk as done: its generation replicates from log 1. */
function applyBaseDone(p: VmProgress, diskId: string): void {
  const d = p.disks[diskId]!;
  d.initial.state = 'done';
  d.generation = d.initial.generation;
  d.nextSequence = 1;
  d.virtualSize = d.initial.virtualSize;
  d.resyncReason = null;
}

async function dropInflight(book: ProgressBook, diskId: string, o: InflightObject): Promise<void> {
  await book.update((p) => {
    const d = p.disks[diskId]!;
    d.inflight = d.inflight.filter((x) => !(x.kind === 'chunk' && x.number === o.number && x.generation === o.generation));
  });
}

async function markDone(book: ProgressBook, diskId: string, o: InflightObject, length: number): Promise<void> {
  await book.update((p) => { applyDone(p, diskId, o, length); });
}

/** Records a committed chunk as done and drops its inflight record. */
function applyDone(p: VmProgress, diskId: string, o: InflightObject, length: number): void {
  const d = p.disks[diskId]!;
  if (hasBit(d.initial.chunksDone, o.number)) return;
  d.initial.chunksDone = withBit(d.initial.chunksDone, o.number);
  d.initial.bytesDone += length;
  d.initial.bytesSent += o.size;
  d.inflight = d.inflight.filter((x) => !(x.kind === 'chunk' && x.number === o.number && x.generation === o.generation));
}

async function remoteDigests(ctx: EngineContext, vm: string, disk: string, offset: number, length: number): Promise<Map<number, string>> {
  const r = await ctx.transport.digests(vm, disk, { blockSize: DeltaBlockSize, offset, length: Math.ceil(length / DeltaBlockSize) * DeltaBlockSize });
  return new Map(r.blocks.map((b) => [b.index, b.sha256]));
}
