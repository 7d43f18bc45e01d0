/**
 * compareDisks: are two disks' virtual contents identical, and if not, where do they first differ?
 * Ranges where neither disk has data are skipped without reading. Disks of different virtual sizes
 * compare as `qemu-img compare` does by default: the common part must match and the larger disk's
 * extra part must read as zeros.
 */
import type { DiskImage, Extent } from '../types.js';
import { ChunkSize, chunksOf } from './copy.js';
import { type ProgressFn } from './copy.js';

export type CompareResult = { identical: true } | { identical: false; offset: number };

/** The 'data' extents of disk in [start, end). */
async function* dataIn(disk: DiskImage, start: number, end: number): AsyncGenerator<Extent> {
  if (end <= start) return;
  for await (const e of disk.extents({ offset: start, length: end - start, scan: false })) {
    if (e.kind === 'data') yield e;
  }
}

/** The union of two ascending extent streams, coalesced. */
async function* union(x: AsyncIterable<Extent>, y: AsyncIterable<Extent>): AsyncGenerator<Extent> {
  const ix = x[Symbol.asyncIterator]();
  const iy = y[Symbol.asyncIterator]();
  let ex = await ix.next();
  let ey = await iy.next();
  let cur: Extent | undefined;
  while (!ex.done || !ey.done) {
    let take: Extent;
    if (ey.done || (!ex.done && ex.value.offset <= ey.value.offset)) { take = ex.value as Extent; ex = await ix.next(); }
    else { take = ey.value; ey = await iy.next(); }
    if (cur && take.offset <= cur.offset + cur.length) {
      cur.length = Math.max(cur.offset + cur.length, take.offset + take.length) - cur.offset;
    } else {
      if (cur) yield cur;
      cur = { ...take };
    }
  }
  if (cur) yield cur;
}

/** Index of the first byte where a and b differ, or -1. */
export function firstDifference(a: Buffer, b: Buffer): number {
  const step = 4096;
  for (let at = 0; at < a.length; at += step) {
    const end = Math.min(a.length, at + step);
    if (a.compare(b, at, end, at, end) === 0) continue;
    for (let i = at; i < end; i++) if (a[i] !== b[i]) return i;
  }
  return -1;
}

export async function compareDisks(a: DiskImage, b: DiskImage, options: { onProgress?: ProgressFn } = {}): Promise<CompareResult> {
  const common = Math.min(a.virtualSize, b.virtualSize);
  const total = Math.max(a.virtualSize, b.virtualSize);
  const bufA = Buffer.allocUnsafe(ChunkSize);
  const bufB = Buffer.allocUnsafe(ChunkSize);
  for await (const c of chunksOf(union(dataIn(a, 0, common), dataIn(b, 0, common)))) {
    const va = bufA.subarray(0, c.length);
    const vb = bufB.subarray(0, c.length);
    await Promise.all([a.read(c.offset, va), b.read(c.offset, vb)]);
    const at = firstDifference(va, vb);
    if (at >= 0) return { identical: false, offset: c.offset + at };
    options.onProgress?.({ done: c.offset + c.length, total });
  }
  // The extra part of the larger disk must read as zeros.
  const larger = a.virtualSize > b.virtualSize ? a : b;
  bufB.fill(0);
  for await (const c of chunksOf(dataIn(larger, common, larger.virtualSize))) {
    const va = bufA.subarray(0, c.length);
    await larger.read(c.offset, va);
    const at = firstDifference(va, bufB.subarray(0, c.length));
    if (at >= 0) return { identical: false, offset: c.offset + at };
    options.onProgress?.({ done: c.offset + c.length, total });
  }
  options.onProgress?.({ done: total, total });
  return { identical: true };
}
