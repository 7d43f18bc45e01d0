/**
 * The block allocation table (MS-VHDX §2.5), held in memory as its raw little-endian bytes so that
 * dirty 4 KiB pages are written back straight from it. Payload entries and sector bitmap entries
 * are interleaved: after every chunkRatio payload entries comes one sector bitmap entry.
 */
import { ErrCorrupt } from '../../errors.js';
import { MiB } from './format.js';

export const PayloadNotPresent = 0;
export const PayloadUndefined = 1;
export const PayloadZero = 2;
export const PayloadUnmapped = 3;
export const PayloadUnmappedV1 = 5;
export const PayloadFullyPresent = 6;
export const PayloadPartiallyPresent = 7;
export const SbNotPresent = 0;
export const SbPresent = 6;

const BatPageSize = 4096;
const EntriesPerPage = BatPageSize / 8;

export interface Geometry {
  blockSize: number;
  logicalSectorSize: number;
  virtualSize: number;
  hasParent: boolean;
}

/** Entry counts derived from the geometry (§2.5 "BAT" and qemu's vhdx_calc_bat_entries). */
export function batLayout(g: Geometry): { chunkRatio: number; dataBlocks: number; sbBlocks: number; totalEntries: number } {
  const chunkRatio = (2 ** 23 * g.logicalSectorSize) / g.blockSize;
  const dataBlocks = Math.ceil(g.virtualSize / g.blockSize);
  const sbBlocks = Math.ceil(dataBlocks / chunkRatio);
  const totalEntries = g.hasParent ? sbBlocks * (chunkRatio + 1) : dataBlocks + Math.floor((dataBlocks - 1) / chunkRatio);
  return { chunkRatio, dataBlocks, sbBlocks, totalEntries };
}

export class Bat {
  readonly chunkRatio: number;
  private readonly dirtyPages = new Set<number>();

  /** bytes: the table, exactly totalEntries * 8 bytes long (or longer after a grow). */
  constructor(public bytes: Buffer, chunkRatio: number) {
    this.chunkRatio = chunkRatio;
  }

  get entryCount(): number {
    return this.bytes.length / 8;
  }

  payloadIndex(block: number): number {
    return block + Math.floor(block / this.chunkRatio);
  }

  bitmapIndex(chunk: number): number {
    return chunk * (this.chunkRatio + 1) + this.chunkRatio;
  }

  state(index: number): number {
    return this.bytes.readUInt32LE(index * 8) & 7;
  }

  /** File offset in bytes (FileOffsetMB << 20); may exceed the safe-integer range only if corrupt. */
  offset(index: number): number {
    const lo = this.bytes.readUInt32LE(index * 8);
    const hi = this.bytes.readUInt32LE(index * 8 + 4);
    return hi * 2 ** 32 + ((lo & 0xfff00000) >>> 0);
  }

  set(index: number, state: number, fileOffset: number): void {
    const mb = fileOffset / MiB;
    const lo = (((mb & 0xfff) << 20) | state) >>> 0;
    const hi = Math.floor(mb / 4096);
    this.bytes.writeUInt32LE(lo, index * 8);
    this.bytes.writeUInt32LE(hi, index * 8 + 4);
    this.dirtyPages.add(Math.floor(index / EntriesPerPage));
  }

  get dirty(): boolean {
    return this.dirtyPages.size > 0;
  }

  /** Contiguous runs of dirty BAT bytes, as [byte offset in the table, bytes], and forgets them. */
  takeDirtyRuns(): { at: number; data: Buffer }[] {
    const pages = [...this.dirtyPages].sort((a, b) => a - b);
    this.dirtyPages.clear();
    const runs: { at: number; data: Buffer }[] = [];
    let i = 0;
    while (i < pages.length) {
      let j = i;
      while (j + 1 < pages.length && pages[j + 1] === pages[j]! + 1) j++;
      const at = pages[i]! * BatPageSize;
      const end = Math.min((pages[j]! + 1) * BatPageSize, this.bytes.length);
      runs.push({ at, data: this.bytes.subarray(at, end) });
      i = j + 1;
    }
    return runs;
  }

  /** Marks every page of [fromEntry, toEntry) dirty (used after growing the table). */
  markDirty(fromEntry: number, toEntry: number): void {
    for (let p = Math.floor(fromEntry / EntriesPerPage); p * EntriesPerPage < toEntry; p++) this.dirtyPages.add(p);
  }
}

/**
 * Checks every allocated entry of a freshly read BAT: 1 MiB units past the header section, the
 * whole block inside the file, clear of the log, BAT and metadata regions.
 */
export function validateBat(bat: Bat, blockSize: number, fileSize: number, reserved: { start: number; end: number }[]): void {
  const sbInterval = bat.chunkRatio + 1;
  for (let i = 0; i < bat.entryCount; i++) {
    const st = bat.state(i);
    const isSb = (i + 1) % sbInterval === 0;
    const present = isSb ? st === SbPresent : st === PayloadFullyPresent || st === PayloadPartiallyPresent;
    if (isSb && st !== SbPresent && st !== SbNotPresent) throw ErrCorrupt(`BAT entry ${i} has sector bitmap state ${st}`);
    if (!isSb && (st === 4)) throw ErrCorrupt(`BAT entry ${i} has unknown payload state ${st}`);
    if (!present) continue;
    const off = bat.offset(i);
    const len = isSb ? MiB : blockSize;
    if (off < MiB || off + len > fileSize) throw ErrCorrupt(`BAT entry ${i} points outside the file (offset ${off})`);
    for (const r of reserved) {
      if (off < r.end && r.start < off + len) throw ErrCorrupt(`BAT entry ${i} overlaps file metadata (offset ${off})`);
    }
  }
}
