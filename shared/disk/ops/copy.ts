/**
 * The streaming copy every operation shares: reads from one disk and writes to another through a
 * few reused buffers, reads running ahead of the writes, so memory stays bounded (Depth x
 * ChunkSize) whatever the disk size.
 */
import type { DiskImage, Extent } from '../types.js';
import { nonZeroRuns } from './zero.js';

/**
 * Bytes per read; chunks are aligned to multiples of it so zero chunks match format blocks. Small
 * enough that a chunk just read is still in the CPU's cache when it is written out (measured:
 * 1 MiB chunks convert faster than 8 MiB ones, as qemu-img's small buffers do).
 */
export const ChunkSize = 1024 * 1024;
/**
 * Buffers in flight (Depth x ChunkSize of memory): reads fill them ahead, several at once, while
 * the writes drain them in order. Several requests in flight hide the latency of each one, which
 * dominates on a busy machine.
 */
const Depth = 8;
/** Resolution at which zero runs inside a chunk are left unwritten. */
const SparseGranule = 64 * 1024;

/** Bytes of the virtual disk processed so far (written, skipped or found zero) and the total. */
export interface Progress { done: number; total: number }
export type ProgressFn = (progress: Progress) => void;

export interface CopyOptions {
  /**
   * True when dst reads as zeros wherever it is not written (a new image): zero data is skipped.
   * False (merging into an existing disk): zero data becomes dst.zero(), which still costs no data.
   */
  dstIsBlank: boolean;
  onProgress?: ProgressFn;
}

/** Splits the extents into chunks that never cross a multiple of ChunkSize. */
export async function* chunksOf(extents: AsyncIterable<Extent>): AsyncGenerator<Extent> {
  for await (const e of extents) {
    const end = e.offset + e.length;
    for (let at = e.offset; at < end;) {
      const next = Math.min(end, (Math.floor(at / ChunkSize) + 1) * ChunkSize);
      yield { offset: at, length: next - at, kind: e.kind };
      at = next;
    }
  }
}

/**
 * Copies the given extents of src to the same offsets of dst: 'data' extents are read and written
 * (their zero runs skipped or zeroed as options.dstIsBlank says), 'zero' extents zeroed unless dst
 * is blank. Writes happen in ascending order; a failed write fails the copy.
 */
export async function copyExtents(src: DiskImage, dst: DiskImage, extents: AsyncIterable<Extent>, options: CopyOptions): Promise<void> {
  const total = src.virtualSize;
  const pool = Array.from({ length: Depth }, () => Buffer.allocUnsafe(ChunkSize));
  // busy[i] settles when buffer i has been written out and may be read into again.
  const busy: Array<Promise<void>> = pool.map(() => Promise.resolve());
  let tail: Promise<void> = Promise.resolve();
  let slot = 0;
  const enqueue = (job: () => Promise<void>): Promise<void> => {
    tail = tail.then(job);
    tail.catch(() => { /* surfaced by the next await on it */ });
    return tail;
  };

  for await (const c of chunksOf(extents)) {
    const done = c.offset + c.length;
    if (c.kind === 'zero') {
      // Awaited, so the loop never runs ahead of the writes by more than the buffers in flight.
      if (!options.dstIsBlank) await enqueue(() => dst.zero(c.offset, c.length));
      options.onProgress?.({ done, total });
      continue;
    }
    slot = (slot + 1) % Depth;
    await busy[slot];
    const buf = pool[slot]!.subarray(0, c.length);
    // Reads start at once, several in flight; writes follow in order as each read completes.
    const reading = src.read(c.offset, buf);
    reading.catch(() => { /* surfaced by the write job that awaits it */ });
    busy[slot] = enqueue(async () => {
      await reading;
      const runs = nonZeroRuns(buf, SparseGranule);
      const whole = runs.length === 1 && runs[0]![0] === 0 && runs[0]![1] === buf.length;
      if (options.dstIsBlank || whole) await writeRuns(dst, c.offset, buf, runs);
      else await writeWithZeros(dst, c.offset, buf, runs);
      options.onProgress?.({ done, total });
    });
  }
  await tail;
  options.onProgress?.({ done: total, total });
}

async function writeRuns(dst: DiskImage, offset: number, buf: Buffer, runs: Array<[number, number]>): Promise<void> {
  for (const [s, e] of runs) await dst.write(offset + s, buf.subarray(s, e));
}

/** For a disk with content: the non-zero runs are written and the gaps between them zeroed. */
async function writeWithZeros(dst: DiskImage, offset: number, buf: Buffer, runs: Array<[number, number]>): Promise<void> {
  let cursor = 0;
  for (const [s, e] of runs) {
    if (s > cursor) await dst.zero(offset + cursor, s - cursor);
    await dst.write(offset + s, buf.subarray(s, e));
    cursor = e;
  }
  if (cursor < buf.length) await dst.zero(offset + cursor, buf.length - cursor);
}
