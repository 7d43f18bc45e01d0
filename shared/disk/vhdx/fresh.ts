/**
 * Fresh writes: data written into newly allocated blocks that nothing points at until `publish()`.
 * This is the write path of a merge that must apply nothing of a log before the whole log verified:
 * the log's data goes straight to its final place in the file as it streams in, the BAT entries that
 * make it visible change only once the caller knows the log is good, and a log that fails is
 * dropped by `abandon()` (its blocks stay unreferenced space, as after a crash). docs/formats/vhdx.md,
 * "Fresh writes".
 *
 * A block takes fresh writes when the caller's extent rewrites all of it (a block this file holds
 * is then replaced by a new one, without copying, and its old space is reused once the BAT that
 * no longer names it is durable), or when this file does not hold it and has no parent (the rest
 * of a new block reads as zeros, as the unallocated block did). Any other range is refused
 * (`write` returns false) and the caller applies it the ordinary way after `publish()`.
 *
 * A piece of all zeros for a block allocated at the end of the file is not written: that space is a
 * hole and reads as zeros. Writes are gathered into large buffers, contiguous in the file, written
 * while the caller fills the next. Their page-aligned parts are written through to the device
 * (O_DIRECT, VhdxFile.writeThrough): a log's data is written once and not read back soon, and
 * copying it into the page cache costs more CPU than the write itself (newly faulted page-cache
 * memory, then writeback), which the verifying and decompressing threads need. What cannot go
 * through (unaligned edges, a filesystem without O_DIRECT) is written the ordinary way; every
 * `WritebackBytes` of that, a data sync is started in the background (not awaited), so the final
 * flush has little left to do. Either way nothing is durable before the barrier's sync, and nothing
 * points at the data before publish().
 */
import type { FreshWriter } from '../types.js';
import { PayloadFullyPresent } from './bat.js';
import type { VhdxCore } from './core.js';
import { AlignedPool, DirectAlign } from '../../direct-io.js';
import { MiB } from './format.js';
import { blockSource, locate } from './reader.js';

/** Size of one gathering buffer. */
const GatherBytes = 4 * MiB;
/**
 * Buffer writes in flight at once (a write-through write waits for the device). Four, not two: with
 * two the merge's thread waited on the writes for 50-100 ms per GiB merged, with four under 20 ms.
 */
const InFlight = 4;
/** Bytes written between two background data syncs. */
export const WritebackBytes = 64 * MiB;
/**
 * Gathering buffers, page aligned, kept for reuse by every writer of the process: 8 per aligned
 * memory, at most 4 memories; beyond that writers get ordinary buffers, written the ordinary way.
 */
const pool = new AlignedPool(GatherBytes, 8, 4);
/** Compared against to find all-zero pieces (Buffer.equals is a memcmp). */
const Zeros = Buffer.alloc(MiB);

/** True when every byte of data is zero. */
function allZero(data: Buffer): boolean {
  if (data.length === 0) return true;
  if (data[0] !== 0 || data[data.length - 1] !== 0) return false;
  for (let at = 0; at < data.length; at += Zeros.length) {
    const n = Math.min(Zeros.length, data.length - at);
    if (!data.subarray(at, at + n).equals(Zeros.subarray(0, n))) return false;
  }
  return true;
}

export class FreshWrites implements FreshWriter {
  /** Blocks allocated by this writer: block number → file offset. */
  private readonly blocks = new Map<number, number>();
  /** Blocks this file held before, replaced whole: block number → old file offset. */
  private readonly replaced = new Map<number, number>();
  /** Blocks allocated by this writer as new space at the end of the file: they read as zeros until written. */
  private readonly holes = new Set<number>();
  private buf: Buffer | null = null;
  /** The gathered bytes are buf[start, fill); buf[0] is file offset bufFileOff (aligned, so aligned data lies on aligned memory). */
  private start = 0;
  private fill = 0;
  private bufFileOff = 0;
  /** False once the file refused a write-through: the rest is written the ordinary way. */
  private through = true;
  private readonly flying: Promise<void>[] = [];
  private sinceSync = 0;
  private syncing: Promise<void> | null = null;
  private failed: unknown = undefined;
  private done = false;
  /** Bytes accepted. */
  bytes = 0;

  constructor(private readonly core: VhdxCore, private readonly onEnd: () => void) {}

  /** Pieces passed to write() must lie inside one block of this size. */
  get blockSize(): number {
    return this.core.blockSize;
  }

  /**
   * Writes data at virtual offset `offset` (a range inside one block) into fresh space, or returns
   * false (nothing written) when that block cannot take it. `extent` is the whole range the
   * caller will write contiguously, of which this piece is a part; it tells whether the block is
   * covered whole. The caller may reuse data once the promise settles.
   */
  async write(offset: number, data: Buffer, extent: { offset: number; length: number }): Promise<boolean> {
    if (this.done) throw new Error('fresh writes already ended');
    if (this.failed !== undefined) throw this.failed;
    const core = this.core;
    const { block, inBlock, n, idx } = locate(core, offset, data.length);
    if (n !== data.length) throw new RangeError(`fresh write of ${data.length} bytes at ${offset} crosses a block boundary`);
    let base = this.blocks.get(block);
    if (base === undefined) {
      const src = blockSource(core, core.bat.state(idx));
      const blockStart = block * core.blockSize;
      const whole = extent.offset <= blockStart && extent.offset + extent.length >= Math.min(blockStart + core.blockSize, core.virtualSize);
      // A block this file holds is replaced only when the extent rewrites all of it (no copy).
      if ((src === 'file' || src === 'bitmap' || src === 'parent') && !whole) return false;
      if (src === 'file' || src === 'bitmap') this.replaced.set(block, core.bat.offset(idx));
      // A block written whole may reuse free space; otherwise new space at the end of the file,
      // extended first so the rest of the block reads as zeros (writes in flight lie below it).
      const reused = whole ? core.takeFreeBlock() : undefined;
      base = reused ?? await core.allocate(core.blockSize);
      if (reused === undefined) this.holes.add(block);
      this.blocks.set(block, base);
    }
    // Zeros need no write into new space, which reads as zeros already (a log's data may hold runs of
    // zeros the agent did not send as zero extents); reused space holds old bytes and gets them.
    if (!(this.holes.has(block) && allZero(data))) await this.put(data, base + inBlock);
    this.bytes += data.length;
    return true;
  }

  /** Copies data into the gathering buffer, sending it off when full or when the file offset jumps. */
  private async put(data: Buffer, fileOff: number): Promise<void> {
    let at = 0;
    while (at < data.length) {
      if (this.buf && this.bufFileOff + this.fill !== fileOff + at) await this.send();
      if (!this.buf) {
        this.buf = pool.take();
        const pos = fileOff + at;
        this.start = pos % DirectAlign;
        this.fill = this.start;
        this.bufFileOff = pos - this.start;
      }
      const n = Math.min(data.length - at, this.buf.length - this.fill);
      data.copy(this.buf, this.fill, at, at + n);
      this.fill += n;
      at += n;
      if (this.fill === this.buf.length) await this.send();
    }
  }

  private async send(): Promise<void> {
    const buf = this.buf;
    if (!buf) return;
    const { start, fill: end, bufFileOff: pos } = this;
    this.buf = null;
    this.fill = 0;
    await this.drainTo(InFlight - 1);
    const write = this.writeOut(buf, start, end, pos).then(() => pool.give(buf), (err: unknown) => {
      this.failed ??= err;
    });
    this.flying.push(write);
    this.core.unsynced = true;
  }

  /** Writes buf[start, end) at file offset pos + start: the aligned middle through, the edges the ordinary way. */
  private async writeOut(buf: Buffer, start: number, end: number, pos: number): Promise<void> {
    const file = this.core.file;
    const a = Math.ceil(start / DirectAlign) * DirectAlign;
    const b = Math.floor(end / DirectAlign) * DirectAlign;
    if (this.through && b > a && pool.aligned(buf)) {
      if (await file.writeThrough(buf.subarray(a, b), pos + a)) {
        if (start < a) await this.writeBuffered(buf.subarray(start, a), pos + start);
        if (b < end) await this.writeBuffered(buf.subarray(b, end), pos + b);
        return;
      }
      this.through = false;
    }
    await this.writeBuffered(buf.subarray(start, end), pos + start);
  }

  private async writeBuffered(data: Buffer, pos: number): Promise<void> {
    await this.core.file.write(data, pos);
    this.sinceSync += data.length;
    if (this.sinceSync >= WritebackBytes && !this.syncing) {
      this.sinceSync = 0;
      // Starts writeback of what is written so far; the flush after publish still syncs everything.
      this.syncing = this.core.file.sync().catch((err: unknown) => {
        this.failed ??= err;
      }).finally(() => {
        this.syncing = null;
      });
    }
  }

  /** Waits until at most `max` buffer writes are in flight; rethrows a write's failure. */
  private async drainTo(max: number): Promise<void> {
    while (this.flying.length > max) await this.flying.shift();
    if (this.failed !== undefined) throw this.failed;
  }

  /** Waits for every write (and background sync) started so far. */
  private async settle(): Promise<void> {
    await this.send();
    await this.drainTo(0);
    await this.syncing;
    if (this.failed !== undefined) throw this.failed;
  }

  /**
   * Makes everything written visible: the new blocks' BAT entries change in memory (FULLY_PRESENT),
   * to reach the disk at the next barrier, after the data. Ends the writer.
   */
  async publish(): Promise<void> {
    try {
      await this.settle();
      for (const [block, base] of this.blocks) this.core.bat.set(this.core.bat.payloadIndex(block), PayloadFullyPresent, base);
      for (const old of this.replaced.values()) this.core.releaseBlock(old);
    } finally {
      this.end();
    }
  }

  /**
   * Drops everything written: the blocks stay unreferenced (leaked until the image is converted,
   * as after a crash) and the image reads as before. Ends the writer; safe to call after publish.
   */
  async abandon(): Promise<void> {
    if (this.done) return;
    try {
      await this.settle().catch(() => undefined);
    } finally {
      this.end();
    }
  }

  private end(): void {
    if (this.done) return;
    this.done = true;
    if (this.buf) pool.give(this.buf);
    this.buf = null;
    this.onEnd();
  }
}
