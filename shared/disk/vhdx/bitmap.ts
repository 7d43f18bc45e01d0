/**
 * Sector bitmaps of a differencing disk (MS-VHDX §2.5.1.2): one bit per logical sector, bit 0 of
 * byte 0 first; 1 means "this file holds the sector", 0 "read it from the parent". Each 1 MiB
 * sector bitmap block covers one chunk (chunkRatio payload blocks). We cache the slice of each
 * payload block (blockSize / sectorSize / 8 bytes) with a byte bound; dirty slices stay pinned
 * until the next barrier writes them.
 */
import { type Bat, SbPresent } from './bat.js';
import type { VhdxFile } from './file.js';
import { MiB } from './format.js';

const MaxCachedBytes = 32 * MiB;

export interface BitRun {
  /** Sector index within the block. */
  start: number;
  end: number;
  present: boolean;
}

export class SectorBitmaps {
  readonly bytesPerBlock: number;
  readonly sectorsPerBlock: number;
  private readonly cache = new Map<number, Buffer>();
  private readonly dirty = new Set<number>();
  private cachedBytes = 0;

  constructor(private readonly file: VhdxFile, private readonly bat: Bat, blockSize: number, sectorSize: number, private readonly allocate: (bytes: number) => Promise<number>) {
    this.sectorsPerBlock = blockSize / sectorSize;
    this.bytesPerBlock = this.sectorsPerBlock / 8;
  }

  private sliceOffset(block: number): number | undefined {
    const idx = this.bat.bitmapIndex(Math.floor(block / this.bat.chunkRatio));
    if (idx >= this.bat.entryCount || this.bat.state(idx) !== SbPresent) return undefined;
    return this.bat.offset(idx) + (block % this.bat.chunkRatio) * this.bytesPerBlock;
  }

  /** The block's bitmap slice (cached; zeros when its bitmap block is not allocated). */
  async get(block: number): Promise<Buffer> {
    const hit = this.cache.get(block);
    if (hit) {
      this.cache.delete(block);
      this.cache.set(block, hit);
      return hit;
    }
    const slice = Buffer.alloc(this.bytesPerBlock);
    const at = this.sliceOffset(block);
    if (at !== undefined) await this.file.read(slice, at, 'sector bitmap');
    this.cache.set(block, slice);
    this.cachedBytes += slice.length;
    this.evict();
    return slice;
  }

  private evict(): void {
    for (const [b, s] of this.cache) {
      if (this.cachedBytes <= MaxCachedBytes) break;
      if (this.dirty.has(b)) continue;
      this.cache.delete(b);
      this.cachedBytes -= s.length;
    }
  }

  /** Runs of present/absent sectors in [from, to) of the block. */
  async runs(block: number, from: number, to: number): Promise<BitRun[]> {
    return bitRuns(await this.get(block), from, to);
  }

  /**
   * Marks every sector of the block absent (in memory; written at the next barrier). A slice with a
   * bit set has a bitmap block: it was read from one or set by setPresent, which allocates it.
   */
  async clear(block: number): Promise<void> {
    const slice = await this.get(block);
    if (slice.every((b) => b === 0)) return;
    slice.fill(0);
    this.dirty.add(block);
  }

  /** Marks sectors [from, to) of the block present; allocates the chunk's bitmap block if needed. */
  async setPresent(block: number, from: number, to: number): Promise<void> {
    const slice = await this.get(block);
    const idx = this.bat.bitmapIndex(Math.floor(block / this.bat.chunkRatio));
    if (this.bat.state(idx) !== SbPresent) {
      const at = await this.allocate(MiB);
      this.bat.set(idx, SbPresent, at);
    }
    setBits(slice, from, to);
    this.dirty.add(block);
  }

  get hasDirty(): boolean {
    return this.dirty.size > 0;
  }

  /** Bytes of dirty slices pinned in memory until the next barrier. */
  get dirtyBytes(): number {
    return this.dirty.size * this.bytesPerBlock;
  }

  /** Writes every dirty slice to its bitmap block. */
  async writeDirty(): Promise<void> {
    for (const block of [...this.dirty].sort((a, b) => a - b)) {
      await this.file.write(this.cache.get(block)!, this.sliceOffset(block)!);
    }
    this.dirty.clear();
    this.evict();
  }
}

export function setBits(buf: Buffer, from: number, to: number): void {
  let i = from;
  while (i < to && (i & 7) !== 0) { buf[i >> 3]! |= 1 << (i & 7); i++; }
  if (i + 8 <= to) { buf.fill(0xff, i >> 3, (to & ~7) >> 3); i = to & ~7; }
  while (i < to) { buf[i >> 3]! |= 1 << (i & 7); i++; }
}

function bitAt(buf: Buffer, i: number): boolean {
  return (buf[i >> 3]! & (1 << (i & 7))) !== 0;
}

/** Splits [from, to) into runs of equal bits, skipping whole 0x00/0xff bytes at once. */
export function bitRuns(buf: Buffer, from: number, to: number): BitRun[] {
  const runs: BitRun[] = [];
  let i = from;
  while (i < to) {
    const present = bitAt(buf, i);
    const full = present ? 0xff : 0x00;
    let j = i + 1;
    while (j < to) {
      if ((j & 7) === 0 && j + 8 <= to && buf[j >> 3] === full) { j += 8; continue; }
      if (bitAt(buf, j) !== present) break;
      j++;
    }
    runs.push({ start: i, end: j, present });
    i = j;
  }
  return runs;
}
