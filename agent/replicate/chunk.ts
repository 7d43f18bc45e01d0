/**
 * One chunk of an initial copy or resynchronization: a range of the disk read once into a buffer,
 * digested for the tracker's map, and turned into the extents of a base log: for a full base every
 * block that is not zeros (holes and zero blocks are skipped: a full base reads as zero where it lists
 * nothing), for a delta base every 1 MiB block whose SHA-256 differs from the replica's.
 */
import { createHash } from 'node:crypto';
import type { DiskImage, Extent } from '../../shared/disk/index.js';
import type { Range } from '../../shared/disk/sparse.js';
import { MapBlockSize, blockDigest, zeroDigest } from '../tracker/blockmap.js';

export const DeltaBlockSize = 1 << 20;
const zeroBlock = Buffer.alloc(DeltaBlockSize);
/** Pads a short last block to the map's block size (never written). */
const pad = Buffer.alloc(MapBlockSize);

export interface ChunkContents {
  /** The chunk's bytes (zeros where the disk has holes). */
  data: Buffer;
  /** Map digests of its 64 KiB blocks. */
  digests: Uint32Array;
  /** 1 for each 64 KiB block that reads as zeros. */
  zero: Uint8Array;
  bytesRead: number;
}

/**
 * The ranges of [start, start+length) that the disk's metadata says may hold data (a VHDX's or VHD's
 * allocated blocks, a raw file's data from SEEK_DATA), asked without reading: for a thread that
 * cannot ask itself (SealJob.ranges).
 */
export async function dataRangesOf(disk: DiskImage, start: number, length: number): Promise<Range[]> {
  const ranges: Range[] = [];
  for await (const e of disk.extents({ offset: start, length, scan: false })) ranges.push({ offset: e.offset, length: e.length });
  return ranges;
}

/**
 * Reads [start, start+length) into buf, skipping what the disk's metadata says holds no data: a
 * VHDX's or VHD's unallocated blocks, a raw file's holes (SEEK_DATA); or, given ranges, what they do
 * not cover. What is skipped reads as zeros.
 */
export async function readChunk(disk: DiskImage, start: number, length: number, buf: Buffer, seed: bigint, ranges?: readonly Range[]): Promise<ChunkContents> {
  const data = buf.subarray(0, length);
  const allocated = new Uint8Array(Math.ceil(length / MapBlockSize));
  let bytesRead = 0;
  let zeroFrom = start; // everything before it is read or zero-filled
  for await (const r of ranges ?? disk.extents({ offset: start, length, scan: false })) {
    const s = Math.max(r.offset, start);
    const e = Math.min(r.offset + r.length, start + length);
    if (e <= s) continue;
    data.fill(0, zeroFrom - start, s - start);
    await disk.read(s, data.subarray(s - start, e - start));
    zeroFrom = e;
    bytesRead += e - s;
    allocated.fill(1, Math.floor((s - start) / MapBlockSize), Math.ceil((e - start) / MapBlockSize));
  }
  data.fill(0, zeroFrom - start);
  const digests = new Uint32Array(allocated.length);
  const zero = new Uint8Array(allocated.length);
  for (let i = 0; i < digests.length; i++) {
    let block = data.subarray(i * MapBlockSize, (i + 1) * MapBlockSize);
    // Zeros are found by comparison (it stops at the first non-zero byte) and never hashed.
    if (!allocated[i] || isZero(block)) {
      zero[i] = 1;
      digests[i] = zeroDigest(seed);
      continue;
    }
    if (block.length < MapBlockSize) block = Buffer.concat([block, pad.subarray(block.length)]);
    digests[i] = blockDigest(block, seed);
  }
  return { data, digests, zero, bytesRead };
}

/** Extents of the non-zero 64 KiB blocks of a chunk at start (a full base). */
export function nonZeroExtents(c: ChunkContents, start: number): Extent[] {
  return coalesce(c.data, start, MapBlockSize, (_block, offset) => (c.zero[(offset - start) / MapBlockSize] ? undefined : 'data'));
}

/** Extents of the 1 MiB blocks that differ from the replica's digests (index → sha256; absent = zeros). */
export function differingExtents(c: ChunkContents, start: number, remote: Map<number, string>): Extent[] {
  return coalesce(c.data, start, DeltaBlockSize, (block, offset) => {
    const want = remote.get(offset / DeltaBlockSize);
    const zero = isZero(block);
    if (want === undefined) return zero ? undefined : 'data';
    if (createHash('sha256').update(block).digest('hex') === want) return undefined;
    return zero ? 'zero' : 'data';
  });
}

function isZero(block: Buffer): boolean {
  return block.equals(zeroBlock.subarray(0, block.length));
}

function coalesce(data: Buffer, start: number, blockSize: number, classify: (block: Buffer, offset: number) => Extent['kind'] | undefined): Extent[] {
  const out: Extent[] = [];
  for (let o = 0; o < data.length; o += blockSize) {
    const block = data.subarray(o, o + blockSize);
    const kind = classify(block, start + o);
    if (kind === undefined) continue;
    const last = out.at(-1);
    if (last && last.kind === kind && last.offset + last.length === start + o) last.length += block.length;
    else out.push({ offset: start + o, length: block.length, kind });
  }
  return out;
}
