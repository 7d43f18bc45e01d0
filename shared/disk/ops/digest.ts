/**
 * SHA-256 of ranges of a disk as it reads them: the reverse applier's confirmation of what it received
 * (agent) and the same ranges of the hoster's disk (service), compared by failback. Reads through one
 * reused buffer, never a whole range in memory.
 */
import { createHash } from 'node:crypto';
import type { DiskImage } from '../types.js';

/** Bytes read at a time. */
const ChunkBytes = 4 << 20;

export interface RangeDigest {
  offset: number;
  length: number;
  sha256: string;
}

/** The digest of each [offset, length) of disk, in the order given. */
export async function digestRanges(disk: DiskImage, ranges: readonly (readonly [number, number])[]): Promise<RangeDigest[]> {
  const buf = Buffer.alloc(ChunkBytes);
  const out: RangeDigest[] = [];
  for (const [offset, length] of ranges) {
    const h = createHash('sha256');
    for (let at = 0; at < length; at += ChunkBytes) {
      const view = buf.subarray(0, Math.min(ChunkBytes, length - at));
      await disk.read(offset + at, view);
      h.update(view);
    }
    out.push({ offset, length, sha256: h.digest('hex') });
  }
  return out;
}
