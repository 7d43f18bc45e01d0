/**
 * Where a sparse file holds data: lseek with SEEK_DATA and SEEK_HOLE, through fs-ext since Node's fs
 * has no lseek. Linux only (the whence values 3 and 4 are Linux's; other systems number them apart).
 * A filesystem without hole tracking answers that everything is data, which is still right. Where
 * the call is not available at all (another platform, the binding not built, a worker thread),
 * dataRanges returns undefined and callers read everything.
 */
import { createRequire } from 'node:module';
import { isMainThread } from 'node:worker_threads';

const SeekData = 3;
const SeekHole = 4;

/** A byte range of a file or disk. */
export interface Range { offset: number; length: number }

type SeekSync = (fd: number, offset: number, whence: number) => number;

let seek: SeekSync | null | undefined;

function seeker(): SeekSync | null {
  if (seek !== undefined) return seek;
  seek = null;
  // fs-ext is a per-process addon (not context-aware): loaded in a second thread, its init aborts
  // the process. Only the main thread asks; other threads are handed the ranges (SealJob.ranges).
  if (process.platform !== 'linux' || !isMainThread) return seek;
  try {
    seek = (createRequire(import.meta.url)('fs-ext') as { seekSync: SeekSync }).seekSync;
  } catch {
    seek = null;
  }
  return seek;
}

/**
 * The ranges of [offset, offset + length) of the open file fd that may hold data, in order and not
 * overlapping; the rest are holes, which read as zeros. Undefined when this cannot be asked.
 * lseek only looks at the file's block map: it reads nothing, however large the range.
 */
export function dataRanges(fd: number, offset: number, length: number): Range[] | undefined {
  const lseek = seeker();
  if (lseek === null) return undefined;
  const end = offset + length;
  const ranges: Range[] = [];
  try {
    for (let at = offset; at < end;) {
      let data: number;
      try {
        data = lseek(fd, at, SeekData);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENXIO') break; // no data at or after `at`
        throw err;
      }
      if (data >= end) break;
      const hole = Math.min(lseek(fd, data, SeekHole), end);
      ranges.push({ offset: data, length: hole - data });
      at = hole;
    }
  } catch {
    return undefined; // EINVAL and the like: this file or filesystem cannot be asked
  }
  return ranges;
}
