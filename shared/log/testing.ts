/**
 * Test and tool helpers: a log source over an in-memory disk, and draining a reader into extents.
 * Used by the tests, the vector generator and the benchmarks; not by product code.
 */
import { createHash } from 'node:crypto';
import type { Extent } from '../disk/types.js';
import type { LogReader } from './reader.js';
import type { LogSource } from './writer.js';

/** Concatenates a stream (small ones only: tests and vectors). */
export async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of stream) parts.push(p);
  return Buffer.concat(parts);
}

/** A source reading from a buffer that stands for the disk; with views, it also lends the bytes where they lie. */
export function memorySource(disk: Buffer, extents: Iterable<Extent> | AsyncIterable<Extent>, views = false): LogSource {
  return {
    extents,
    read: async (offset, buf) => { disk.copy(buf, 0, offset, offset + buf.length); },
    ...(views ? { view: (offset: number, length: number) => disk.subarray(offset, offset + length) } : {}),
  };
}

export interface DecodedExtent extends Extent {
  /** SHA-256 of a data extent's bytes. */
  sha256?: string;
  /** A data extent's bytes as hex, when asked for and small. */
  hex?: string;
}

/** Reads every item and returns whole extents (data hashed, and kept as hex up to hexLimit bytes). */
export async function drainExtents(reader: LogReader, hexLimit = 0): Promise<DecodedExtent[]> {
  const out: DecodedExtent[] = [];
  let hash = createHash('sha256');
  let hex: Buffer[] = [];
  for await (const item of reader.items()) {
    if (item.kind === 'zero') {
      out.push({ offset: item.offset, length: item.length, kind: 'zero' });
      continue;
    }
    if (item.offset === item.extent.offset) {
      hash = createHash('sha256');
      hex = [];
    }
    hash.update(item.data);
    if (item.extent.length <= hexLimit) hex.push(Buffer.from(item.data));
    if (item.offset + item.length === item.extent.offset + item.extent.length) {
      const e: DecodedExtent = { offset: item.extent.offset, length: item.extent.length, kind: 'data', sha256: hash.digest('hex') };
      if (item.extent.length <= hexLimit) e.hex = Buffer.concat(hex).toString('hex');
      out.push(e);
    }
  }
  return out;
}
