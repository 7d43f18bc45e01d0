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
import { MapBlockSize, zeroDigest } from '../tracker/blockmap.js';
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
 * nothing when one is already running. A full base is planned now (see planSlots).
 */
export async function startBase(ctx: EngineContext, book: ProgressBook, diskId: string, disk: DiskImage, mode: 'full' | 'delta', serviceGeneration: number, vmCycle?: VmCycle): Promise<void> {
  const d = book.progress.disks[diskId]!;
  if (d.initial.state === 'running') return;
  const generation = Math.max(d.generation, d.initial.generation, serviceGeneration) + 1;
  const slots = mode === 'full' ? await planSlots(disk, DefaultChunkSize) : undefined;
  await (await createBaseMap(ctx.state.mapPath(book.vm, diskId, 'initial'), disk.virtualSize, DefaultChunkSize, slots)).close();
  await book.update((p) => {
    p.disks[diskId]!.initial = {
      state: 'running', mode, generation, virtualSize: disk.virtualSize, chunkSize: DefaultChunkSize, chunksDone: '',
      bytesTotal: plannedBytes(disk.virtualSize, DefaultChunkSize, slots), bytesDone: 0, bytesSent: 0, cycle: vmCycle?.id ?? null, capturedMs: vmCycle?.capturedMs ?? null,
      ...(slots === undefined ? {} : { slots }),
    };
  });
}

/**
 * A full base's plan: the bitmap (as chunksDone's) of the chunkSize slots of the disk that its
 * metadata says may hold data (a raw file's SEEK_DATA ranges, a VHDX's or VHD's allocated blocks),
 * asked without reading anything. Only these slots are read and sent, as chunks 0, 1, … in disk
 * order; a slot that is all hole is no chunk at all, and reads as zeros at the service (a full base
 * is zero wherever no chunk covers it: protocol §8). So a sparse disk's base costs what is
 * allocated: a 100 GiB raw file holding 80 MiB is ten chunks, not 12,800. A disk with no data
 * still gets one chunk (slot 0), so every base has one.
 */
export async function planSlots(disk: DiskImage, chunkSize: number): Promise<string> {
  const bits = Buffer.alloc(Math.ceil(slotCount(disk.virtualSize, chunkSize) / 8));
  let any = false;
  for await (const e of disk.extents({ offset: 0, length: disk.virtualSize, scan: false })) {
    if (e.kind !== 'data' || e.length === 0) continue;
    for (let s = Math.floor(e.offset / chunkSize); s < Math.ceil((e.offset + e.length) / chunkSize); s++) bits[s >> 3]! |= 1 << (s & 7);
    any = true;
  }
  if (!any) bits[0]! |= 1;
  return bits.toString('base64');
}

function slotCount(virtualSize: number, chunkSize: number): number {
  return Math.max(1, Math.ceil(virtualSize / chunkSize));
}

/** The slots a base's chunks 0, 1, … cover, in order: the planned ones, or (no plan: a delta base, or one an older agent began) every slot. */
export function chunkSlots(virtualSize: number, chunkSize: number, slots: string | undefined): number[] {
  const n = slotCount(virtualSize, chunkSize);
  if (slots === undefined) return Array.from({ length: n }, (_, i) => i);
  const bits = Buffer.from(slots, 'base64');
  const out: number[] = [];
  for (let i = 0; i < n; i++) if (((bits[i >> 3] ?? 0) >> (i & 7) & 1) === 1) out.push(i);
  return out;
}

/** Bytes of the disk a base reads: its slots' (holes left out of a plan cost nothing). */
function plannedBytes(virtualSize: number, chunkSize: number, slots: string | undefined): number {
  return chunkSlots(virtualSize, chunkSize, slots).reduce((n, s) => n + Math.min(chunkSize, virtualSize - s * chunkSize), 0);
}

/**
 * Creates the base's block map. The blocks of slots left out of the plan get the zero digest now
 * (what a hole reads as), so the first cycle after the base compares them with zeros, as the
 * replica holds; the planned ones are written as their chunks are read.
 */
async function createBaseMap(path: string, virtualSize: number, chunkSize: number, slots: string | undefined): Promise<BlockMapWriter> {
  const map = await BlockMapWriter.create(path, { seed: randomSeed(), blockCount: blockCountOf(virtualSize) });
  try {
    if (slots !== undefined) {
      const planned = new Set(chunkSlots(virtualSize, chunkSize, slots));
      const perSlot = chunkSize / MapBlockSize;
      const zeros = new Uint32Array(Math.min(perSlot * 64, map.header.blockCount)).fill(zeroDigest(map.header.seed));
      for (let s = 0; s < slotCount(virtualSize, chunkSize);) {
        if (planned.has(s)) { s++; continue; }
        // A run of unplanned slots, written in pieces of at most zeros.length blocks.
        let e = s;
        while (e < slotCount(virtualSize, chunkSize) && !planned.has(e)) e++;
        const last = Math.min(e * perSlot, map.header.blockCount);
        for (let b = s * perSlot; b < last; b += zeros.length) await map.write(b, zeros.subarray(0, Math.min(zeros.length, last - b)));
        s = e;
      }
    }
  } catch (err) {
    await map.close();
    throw err;
  }
  return map;
}

/**
 * Sends (or resumes) the running base; returns the bytes sent. Chunks sealed now carry vmCycle (the
 * engine's current cycle). With a deadline (ctx.now() time in
 * ms), no chunk is started after it: the base stays running, with the chunks done so far recorded,
 * and the next call resumes it.
 */
export async function runBase(ctx: EngineContext, book: ProgressBook, config: VmConfig, diskId: string, disk: DiskImage, deadline?: number, vmCycle?: VmCycle): Promise<number> {
  const vm = config.name;
  const mapPath = ctx.state.mapPath(vm, diskId, 'initial');
  let map = await BlockMapWriter.reopen(mapPath);
  if (!map) {
    // The map of the finished chunks is gone: start the base over rather than trust it.
    const ip = book.progress.disks[diskId]!.initial;
    map = await createBaseMap(mapPath, ip.virtualSize, ip.chunkSize, ip.slots);
    await book.update((p) => { Object.assign(p.disks[diskId]!.initial, { chunksDone: '', bytesDone: 0, bytesSent: 0 }); });
  }
  if (vmCycle && await replan(ctx, book, diskId, disk, vmCycle)) {
    await map.close();
    map = await BlockMapWriter.reopen(mapPath);
    if (!map) throw new Error(`${mapPath} vanished after planning the base`);
  }
  const ip = book.progress.disks[diskId]!.initial;
  const { generation, chunkSize, mode, virtualSize } = ip;
  // Every chunk carries the VM cycle it is read in (the engine's; else the one the base started in):
  // a base read within one cycle is at that cycle, one read over several is at none (docs/formats/hrl.md).
  const started = typeof ip.cycle === 'number' && typeof ip.capturedMs === 'number' ? { cycle: ip.cycle, capturedMs: ip.capturedMs } : {};
  const baseCycle = vmCycle ? { cycle: vmCycle.id, capturedMs: vmCycle.capturedMs } : started;
  const committedCycle = baseCycle.cycle !== undefined ? { cycle: baseCycle.cycle, capturedAt: new Date(baseCycle.capturedMs).toISOString() } : {};
  const slots = chunkSlots(virtualSize, chunkSize, ip.slots);
  const chunkCount = slots.length;
  const lengthOf = (i: number) => Math.min(chunkSize, virtualSize - slots[i]! * chunkSize);
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
      await markDone(book, diskId, o, lengthOf(o.number));
      sent += o.size;
    }
    for (let i = 0; i < chunkCount; i++) if (!hasBit(book.progress.disks[diskId]!.initial.chunksDone, i)) todo.push(i);
    const seed = map.header.seed;
    const nextChunk = () => (deadline !== undefined && ctx.now().getTime() >= deadline ? undefined : todo.shift());
    const worker = async () => {
      for (let i = nextChunk(); i !== undefined; i = nextChunk()) {
        const start = slots[i]! * chunkSize;
        const length = lengthOf(i);
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
 * Plans a full base again when it is about to be read in another VM cycle than the one its plan was
 * made in, before any of its chunks was read (a base that yielded before its first chunk, or an agent
 * restarted in between): its holes were seen in that cycle, so without this a base whose chunks were
 * all read in the later cycle would claim that cycle with holes as of the earlier one. Once a chunk
 * was read the plan stays (chunk numbers name its slots); the base is then read over several cycles,
 * at none anyway. Returns whether it planned (a new map was made).
 */
async function replan(ctx: EngineContext, book: ProgressBook, diskId: string, disk: DiskImage, vmCycle: VmCycle): Promise<boolean> {
  const d = book.progress.disks[diskId]!;
  const ip = d.initial;
  if (ip.mode !== 'full' || ip.slots === undefined || ip.cycle === vmCycle.id || disk.virtualSize !== ip.virtualSize) return false;
  if (Buffer.from(ip.chunksDone, 'base64').some((b) => b !== 0) || d.inflight.some((o) => o.kind === 'chunk' && o.generation === ip.generation)) return false;
  const slots = await planSlots(disk, ip.chunkSize);
  await (await createBaseMap(ctx.state.mapPath(book.vm, diskId, 'initial'), ip.virtualSize, ip.chunkSize, slots)).close();
  await book.update((p) => {
    Object.assign(p.disks[diskId]!.initial, {
      slots, chunksDone: '', bytesDone: 0, bytesSent: 0, bytesTotal: plannedBytes(ip.virtualSize, ip.chunkSize, slots), cycle: vmCycle.id, capturedMs: vmCycle.capturedMs,
    });
  });
  return true;
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
  const chunkCount = chunkSlots(ip.virtualSize, ip.chunkSize, ip.slots).length;
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
