/**
 * Staging a log before it touches a replica: the sealed object is streamed from the store through a
 * SHA-256 of its bytes (on a helper thread, hash-thread.ts) into the envelope and .hrl readers, and
 * every verified item is kept. Only when the reader ended cleanly (trailer set), the object digest equals the committed one and the header
 * names this disk, generation and sequence, is the staged log handed to apply. A failure leaves the
 * replica untouched.
 *
 * Where the items are kept: in memory, as runs of contiguous data packed into large slabs (so apply
 * issues few, large writes), while the process-wide budget allows (`StageMemoryBytes`, shared by every
 * merge running in the process); a log that outgrows it spills to a local staging file and continues
 * there (its directory is created then). Callers release a staged log with `discardStaged` once
 * applied or abandoned.
 *
 * Direct writes: when the caller offers a sink (a VHDX top layer's fresh writes,
 * shared/disk/vhdx/fresh.ts), data goes straight into new blocks of the replica that nothing points
 * at yet, and only what the sink refuses (blocks the layer already holds, partly covered blocks of a
 * differencing layer) is staged. The sink is published by applyStaged, after verification, and
 * abandoned when the log fails: so it changes nothing the replica reads until then either.
 *
 * Staging file: records of [kind u8 (1 data, 2 zero)][offset u64 LE][length u64 LE][data if kind 1].
 */
import { mkdir, open, rm } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Readable } from 'node:stream';
import type { RecipientKeys } from '../crypto/keys.js';
import { ErrTampered } from '../errors.js';
import type { LogHeader } from './index.js';
import { readLog } from './index.js';
import { recycleBodyChunk } from '../objectstore/index.js';
import { givePooled, takePooled } from '../buffer-pool.js';
import type { DiskImage, FreshWriter } from '../disk/index.js';
import { Sha256 } from '../hash-thread.js';

const RecordHeaderBytes = 17;
const KindData = 1;
const KindZero = 2;
/**
 * Memory staging packs data into slabs: the first is small (most logs of a 30 s cycle are), each next
 * one twice the last up to SlabBytes, so a big log is written in runs of up to SlabBytes.
 */
const SlabBytes = 8 << 20;
const FirstSlabBytes = 256 << 10;
/** Object chunks on their way through the hash thread while the reader works on earlier ones. */
const HashAhead = 3;
/** Bytes of staged plaintext all merges of a process may hold in memory at once; beyond it, files. */
export const StageMemoryBytes = 256 << 20;

/** One contiguous piece of a staged log: data to write, or a range to zero. */
export type StagedRun = { kind: 'data'; offset: number; data: Buffer } | { kind: 'zero'; offset: number; length: number };

/** Where data may go straight away without changing what the replica reads (a FreshWriter). */
export type DirectSink = FreshWriter;

export interface StagedLog {
  header: LogHeader;
  /** The sink that took part of the data directly, to publish before the staged runs are written. */
  direct: DirectSink | null;
  /** The staging file, when the log spilled to disk (or null when it stayed in memory). */
  path: string | null;
  /** The log's runs, when it stayed in memory. */
  runs: StagedRun[] | null;
  /** Budget bytes this log holds until discarded. */
  reserved: number;
  /** The slabs under runs: back to the thread's buffer pool when the log is discarded. */
  slabs: Buffer[];
}

export interface StageInput {
  /** The sealed object's bytes. */
  object: Readable;
  key: RecipientKeys;
  expect: { tenant: string; vm: string; disk: string; generation: number; sequence: number; cycle?: number | null };
  sha256: string;
  size: number;
  /**
   * Offers a sink for the log once its authenticated header is known (undefined: stage everything).
   * Called at most once; the sink is abandoned if the log fails.
   */
  direct?: (header: LogHeader) => Promise<DirectSink | undefined>;
}

/** The process-wide memory budget; `limit` is settable for tests of the spill path. */
export const stageBudget = { limit: StageMemoryBytes, used: 0 };

function reserve(bytes: number): boolean {
  if (stageBudget.used + bytes > stageBudget.limit) return false;
  stageBudget.used += bytes;
  return true;
}

/** Accumulates verified items: in memory while the budget allows, then in the staging file. */
class Stager {
  runs: StagedRun[] | null = [];
  reserved = 0;
  /** Slabs taken from the thread's buffer pool (shared/buffer-pool.ts), given back once unused. */
  slabs: Buffer[] = [];
  private slab: Buffer | null = null;
  private fill = 0;
  private nextSlab = FirstSlabBytes;
  private out: FileHandle | null = null;
  private at = 0;
  private readonly head = Buffer.alloc(RecordHeaderBytes);

  constructor(private readonly path: string) {}

  get spilled(): boolean {
    return this.out !== null;
  }

  async add(item: { kind: 'data' | 'zero'; offset: number; length: number; data?: Buffer }): Promise<void> {
    if (this.runs && item.kind === 'zero') {
      this.runs.push({ kind: 'zero', offset: item.offset, length: item.length });
      return;
    }
    if (this.runs && this.keep(item.offset, item.data!)) return;
    if (this.runs) await this.spill();
    await this.record(item.kind, item.offset, item.length, item.data);
  }

  /** Copies data into the current slab (the reader may reuse its buffers); false when over budget. */
  private keep(offset: number, data: Buffer): boolean {
    if (!this.slab || this.fill + data.length > this.slab.length) {
      const standard = this.nextSlab;
      const size = Math.max(standard, data.length);
      this.nextSlab = Math.min(SlabBytes, this.nextSlab * 2);
      if (!reserve(size)) return false;
      this.reserved += size;
      // Slabs of the standard sizes come from the thread's pool: a fresh slab per log (about twice
      // the log's size in all) made V8 run a full collection every few chunks of a base in the
      // service's heap. A larger item's slab is its own size, left to the collector.
      this.slab = size === standard ? takePooled(size) : Buffer.allocUnsafe(size);
      if (size === standard) this.slabs.push(this.slab);
      this.fill = 0;
    }
    const start = this.fill;
    data.copy(this.slab, start);
    this.fill += data.length;
    const last = this.runs!.at(-1);
    // Extend the previous run when it is contiguous on the disk and ends where this copy begins.
    if (last?.kind === 'data' && last.offset + last.data.length === offset && last.data.buffer === this.slab.buffer && last.data.byteOffset + last.data.length === this.slab.byteOffset + start) {
      this.runs![this.runs!.length - 1] = { kind: 'data', offset: last.offset, data: this.slab.subarray(start - last.data.length, this.fill) };
    } else {
      this.runs!.push({ kind: 'data', offset, data: this.slab.subarray(start, this.fill) });
    }
    return true;
  }

  /** Moves what memory holds into the staging file and releases its budget. */
  private async spill(): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
    this.out = await open(this.path, 'wx', 0o600);
    const runs = this.runs!;
    this.runs = null;
    for (const r of runs) await this.record(r.kind, r.offset, r.kind === 'zero' ? r.length : r.data.length, r.kind === 'data' ? r.data : undefined);
    this.release();
    this.slab = null;
  }

  private async record(kind: 'data' | 'zero', offset: number, length: number, data?: Buffer): Promise<void> {
    const head = this.head;
    head.writeUInt8(kind === 'data' ? KindData : KindZero, 0);
    head.writeBigUInt64LE(BigInt(offset), 1);
    head.writeBigUInt64LE(BigInt(length), 9);
    await this.out!.write(head, 0, RecordHeaderBytes, this.at);
    this.at += RecordHeaderBytes;
    if (data) {
      await this.out!.write(data, 0, length, this.at);
      this.at += length;
    }
  }

  /** Releases the budget and the slabs: nothing may read the runs any more. */
  release(): void {
    stageBudget.used -= this.reserved;
    this.reserved = 0;
    giveSlabs(this.slabs);
  }

  async close(): Promise<void> {
    await this.out?.close();
  }
}

/**
 * Verifies the whole object and stages its items (memory or path); throws tampered/corrupt
 * otherwise, having released whatever it held.
 */
export async function stageLog(input: StageInput, path: string): Promise<StagedLog> {
  const digest = new Sha256();
  let bytes = 0;
  // The object's chunks go through the hash thread on their way to the reader, a few at once.
  async function* hashed(): AsyncGenerator<Buffer> {
    const hashing: Promise<Buffer>[] = [];
    for await (const chunk of input.object as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      const going = digest.pass(chunk);
      going.catch(() => undefined); // awaited in order below; a failure is never left unhandled
      hashing.push(going);
      if (hashing.length >= HashAhead) yield await hashing.shift()!;
    }
    while (hashing.length > 0) yield await hashing.shift()!;
  }
  const stager = new Stager(path);
  let ok = false;
  let direct: DirectSink | undefined;
  try {
    const source = hashed();
    // Each object chunk goes back to the file store's buffers once hashed and opened.
    const reader = await readLog(source, { key: input.key, expect: input.expect, recycle: recycleBodyChunk });
    try {
      direct = await input.direct?.(reader.header);
    } catch (err) {
      input.object.destroy();
      throw err;
    }
    for await (const item of reader.items()) {
      if (direct && item.kind === 'data') await writeDirect(direct, stager, item);
      else await stager.add(item);
    }
    if (!reader.trailer) throw ErrTampered('log ended without its trailer');
    // Drain anything after the trailer so the digest covers the whole object.
    while (!(await source.next()).done) { /* counted by hashed() */ }
    if (bytes !== input.size) throw ErrTampered(`object holds ${bytes} bytes, the commit says ${input.size}`);
    const got = await digest.digest();
    if (got !== input.sha256) throw ErrTampered(`object digest ${got} differs from the committed ${input.sha256}`);
    ok = true;
    // No fsync of a staging file: it never outlives its run; after a crash the log is staged again.
    return { header: reader.header, direct: direct ?? null, path: stager.spilled ? path : null, runs: stager.runs, reserved: stager.reserved, slabs: stager.slabs };
  } finally {
    await stager.close();
    if (!ok) {
      digest.drop();
      await direct?.abandon();
      stager.release();
      if (stager.spilled) await rm(path, { force: true });
    }
  }
}

/** Offers a data item to the sink block by block; stages the pieces it refuses. */
async function writeDirect(direct: DirectSink, stager: Stager, item: { offset: number; length: number; data: Buffer; extent: { offset: number; length: number } }): Promise<void> {
  const bs = direct.blockSize;
  for (let at = 0; at < item.length;) {
    const pos = item.offset + at;
    const n = Math.min(item.length - at, bs - (pos % bs));
    const piece = item.data.subarray(at, at + n);
    if (!(await direct.write(pos, piece, item.extent))) await stager.add({ kind: 'data', offset: pos, length: n, data: piece });
    at += n;
  }
}

/** Hands slabs back to the pool, emptying the list (so a second release gives nothing twice). */
function giveSlabs(slabs: Buffer[]): void {
  for (const slab of slabs.splice(0)) givePooled(slab);
}

/** Releases a staged log: its memory budget, its staging file, and direct writes not published. Safe to call twice. */
export async function discardStaged(staged: StagedLog): Promise<void> {
  await staged.direct?.abandon();
  stageBudget.used -= staged.reserved;
  staged.reserved = 0;
  staged.runs = null;
  giveSlabs(staged.slabs);
  if (staged.path) await rm(staged.path, { force: true });
}

/**
 * Writes a staged log's extents into the disk (the top layer of a replica): publishes what went
 * there directly, then writes the staged runs. onRange hears every range written or zeroed from the
 * staged runs (the reverse applier keeps them for failback's equality check; a log staged with a
 * direct sink is a merge's, which does not ask).
 */
export async function applyStaged(staged: StagedLog, disk: DiskImage, bufferBytes = 1 << 20, onRange?: (offset: number, length: number) => void): Promise<void> {
  await staged.direct?.publish();
  if (staged.runs) {
    for (const r of staged.runs) {
      if (r.kind === 'zero') await disk.zero(r.offset, r.length);
      else await disk.write(r.offset, r.data);
      onRange?.(r.offset, r.kind === 'zero' ? r.length : r.data.length);
    }
    return;
  }
  const fh: FileHandle = await open(staged.path!, 'r');
  try {
    const head = Buffer.alloc(RecordHeaderBytes);
    let at = 0;
    let buf = Buffer.alloc(bufferBytes);
    for (;;) {
      const { bytesRead } = await fh.read(head, 0, RecordHeaderBytes, at);
      if (bytesRead === 0) break;
      at += RecordHeaderBytes;
      const offset = Number(head.readBigUInt64LE(1));
      const length = Number(head.readBigUInt64LE(9));
      if (head[0] === KindZero) {
        await disk.zero(offset, length);
        onRange?.(offset, length);
        continue;
      }
      if (length > buf.length) buf = Buffer.alloc(length);
      const view = buf.subarray(0, length);
      await fh.read(view, 0, length, at);
      at += length;
      await disk.write(offset, view);
      onRange?.(offset, length);
    }
  } finally {
    await fh.close();
  }
}
