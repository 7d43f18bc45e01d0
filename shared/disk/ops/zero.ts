/**
 * Zero detection for the sparse paths: a chunk that reads as zeros is never written, so outputs stay
 * sparse (raw) or unallocated (VHD, VHDX). Comparison runs through memcmp against a shared zero page.
 */
const ZeroPage = Buffer.alloc(64 * 1024);

/** True when buf[start, end) holds only zero bytes. */
export function isZero(buf: Buffer, start = 0, end = buf.length): boolean {
  for (let at = start; at < end; at += ZeroPage.length) {
    const n = Math.min(ZeroPage.length, end - at);
    if (buf.compare(ZeroPage, 0, n, at, at + n) !== 0) return false;
  }
  return true;
}

/**
 * The runs of buf that hold non-zero data, at granule resolution (granules are counted from the
 * start of buf): [start, end) pairs, coalesced, in ascending order.
 */
export function nonZeroRuns(buf: Buffer, granule: number): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  for (let at = 0; at < buf.length; at += granule) {
    const end = Math.min(at + granule, buf.length);
    if (isZero(buf, at, end)) continue;
    const last = runs.at(-1);
    if (last && last[1] === at) last[1] = end;
    else runs.push([at, end]);
  }
  return runs;
}
