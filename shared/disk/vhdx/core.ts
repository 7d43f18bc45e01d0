/**
 * The state of one open VHDX file shared by the read, write and resize paths: its layout, the
 * in-memory BAT, the sector bitmaps, block allocation and the barrier that makes new metadata
 * durable. docs/formats/vhdx.md "Order of writes" is the contract this file keeps.
 */
import type { DiskImage } from '../types.js';
import { PayloadFullyPresent, PayloadPartiallyPresent, SbPresent, type Bat } from './bat.js';
import { SectorBitmaps } from './bitmap.js';
import type { VhdxFile } from './file.js';
import { GiB, MiB, type Regions } from './format.js';
import type { HeaderState } from './headers.js';
import { roundUp } from './journal.js';
import type { VhdxMetadata } from './metadata.js';
import type { VhdxLayout } from './open.js';

/** Newly allocated bytes after which a write forces a barrier, bounding what a crash can lose. */
export const MaxPendingAllocation = 4 * GiB;
/** Dirty sector bitmap bytes after which a write forces a barrier, bounding pinned memory. */
export const MaxPendingBitmapBytes = 16 * MiB;

export class VhdxCore {
  readonly file: VhdxFile;
  readonly headers: HeaderState;
  regions: Regions;
  readonly meta: VhdxMetadata;
  bat: Bat;
  readonly bitmaps: SectorBitmaps | undefined;
  readonly blockSize: number;
  readonly sectorSize: number;
  /** Next free, 1 MiB aligned file offset; blocks are appended there. */
  nextAlloc: number;
  private pendingAlloc = 0;
  /**
   * Whole blocks of the file that nothing references, durably: reusable by a write that fills a
   * block whole (fresh.ts). Found at a writable open; replaced blocks join after a final barrier.
   */
  private readonly free: number[] = [];
  /** Blocks replaced since the last final barrier: free once the BAT that no longer names them is durable. */
  private released: number[] = [];
  /** Data written since the last sync (flush has work to do). */
  unsynced = false;
  writesBegun = false;

  constructor(layout: VhdxLayout, public parent: DiskImage | undefined) {
    this.file = layout.file;
    this.headers = layout.headers;
    this.regions = layout.regions;
    this.meta = layout.meta;
    this.bat = layout.bat;
    this.blockSize = layout.meta.blockSize;
    this.sectorSize = layout.meta.logicalSectorSize;
    this.nextAlloc = roundUp(layout.file.size, MiB);
    this.bitmaps = layout.meta.hasParent ? new SectorBitmaps(this.file, this.bat, this.blockSize, this.sectorSize, (n) => this.allocate(n)) : undefined;
    if (!layout.file.readOnly) this.free.push(...freeBlocks(layout, this.blockSize));
  }

  /** A free whole block's offset (its old bytes are garbage: the caller overwrites all of it), or undefined. */
  takeFreeBlock(): number | undefined {
    const at = this.free.pop();
    if (at !== undefined) {
      this.pendingAlloc += this.blockSize;
      this.unsynced = true;
    }
    return at;
  }

  /** The block at offset is no longer referenced in memory; reusable after the next final barrier. */
  releaseBlock(offset: number): void {
    this.released.push(offset);
  }

  get virtualSize(): number {
    return this.meta.virtualSize;
  }

  get hasParent(): boolean {
    return this.meta.hasParent;
  }

  /** Changes FileWriteGuid and DataWriteGuid (durably) before the first change after open. */
  async beginWrites(): Promise<void> {
    if (this.writesBegun) return;
    await this.headers.beginWrites(this.file, true);
    this.writesBegun = true;
  }

  /**
   * Appends bytes (a multiple of 1 MiB) at the end of the file; returns their offset. They read as
   * zeros, unless fill is 'caller-writes-all': then the caller's write covers (and extends over)
   * the whole range before anything points at it, and the file is not extended here.
   */
  async allocate(bytes: number, fill: 'zeros' | 'caller-writes-all' = 'zeros'): Promise<number> {
    const at = this.nextAlloc;
    this.nextAlloc += bytes;
    if (fill === 'zeros') await this.file.extend(at + bytes);
    this.pendingAlloc += bytes;
    this.unsynced = true;
    return at;
  }

  /** Called after a write path finishes: bounds the amount of allocation a crash could drop. */
  async maybeBarrier(): Promise<void> {
    if (this.pendingAlloc >= MaxPendingAllocation || (this.bitmaps?.dirtyBytes ?? 0) >= MaxPendingBitmapBytes) await this.barrier(false);
  }

  /**
   * The barrier: data written so far is made durable first, then the BAT pages and sector bitmap
   * slices that point at it are written (and, when final, made durable too). Metadata therefore
   * never reaches the disk before the data it describes.
   */
  async barrier(final: boolean): Promise<void> {
    const metaDirty = this.bat.dirty || (this.bitmaps?.hasDirty ?? false);
    if (metaDirty) {
      await this.file.sync();
      await this.bitmaps?.writeDirty();
      for (const run of this.bat.takeDirtyRuns()) await this.file.write(run.data, this.regions.bat.fileOffset + run.at);
      this.pendingAlloc = 0;
      this.unsynced = true;
    }
    if (final && this.unsynced) {
      await this.file.sync();
      this.unsynced = false;
    }
    if (final && this.released.length > 0) {
      // The BAT on disk no longer names these blocks.
      this.free.push(...this.released);
      this.released = [];
    }
  }
}

/** At most this many BAT entries are scanned for free space at open (bounds the work on huge disks). */
const MaxScannedEntries = 1 << 20;

/**
 * Payload space no durable entry references (blocks replaced or zeroed before a close, blocks
 * allocated by a writer that crashed), cut into whole blocks at 1 MiB alignment. Read right after
 * open, when the BAT in memory is the BAT on disk.
 */
function freeBlocks(layout: VhdxLayout, blockSize: number): number[] {
  const { bat, reserved, file } = layout;
  if (bat.entryCount > MaxScannedEntries) return [];
  const used: { start: number; end: number }[] = [...reserved];
  const sbInterval = bat.chunkRatio + 1;
  for (let i = 0; i < bat.entryCount; i++) {
    const st = bat.state(i);
    const isSb = (i + 1) % sbInterval === 0;
    if (isSb ? st !== SbPresent : st !== PayloadFullyPresent && st !== PayloadPartiallyPresent) continue;
    const at = bat.offset(i);
    used.push({ start: at, end: at + (isSb ? MiB : blockSize) });
  }
  used.sort((a, b) => a.start - b.start);
  const out: number[] = [];
  let pos = 0;
  const end = Math.floor(file.size / MiB) * MiB;
  for (const u of [...used, { start: end, end }]) {
    for (let at = roundUp(pos, MiB); at + blockSize <= Math.min(u.start, end); at += blockSize) out.push(at);
    pos = Math.max(pos, u.end);
  }
  return out.reverse(); // taken from the end of the array: lowest offsets first
}
