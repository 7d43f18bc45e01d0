/**
 * Writing and zeroing. Data always lands before the metadata that points at it: a block is
 * appended (the file grows by whole blocks, so the rest of a new block reads as zeros), its data
 * written, and only then is its BAT entry (or sector bitmap bit) changed, in memory; the barrier
 * in core.ts writes that metadata after syncing the data.
 */
import { PayloadFullyPresent, PayloadNotPresent, PayloadPartiallyPresent, PayloadZero } from './bat.js';
import type { VhdxCore } from './core.js';
import { ZeroChunk } from './file.js';
import { blockSource, locate, readVirtual } from './reader.js';

interface Segment {
  fileOff: number;
  /** Range of the caller's data. */
  from: number;
  to: number;
}

export async function writeVirtual(core: VhdxCore, offset: number, data: Buffer): Promise<void> {
  const ss = core.sectorSize;
  const end = offset + data.length;
  if (!core.hasParent || (offset % ss === 0 && end % ss === 0)) {
    await writeAligned(core, offset, data);
  } else {
    // A differencing disk tracks whole sectors: merge partial edge sectors with what reads there now.
    const headEnd = Math.min(end, Math.ceil(offset / ss) * ss);
    if (offset % ss !== 0) await writePartialSector(core, offset, data.subarray(0, headEnd - offset));
    const midEnd = Math.max(headEnd, Math.floor(end / ss) * ss);
    if (midEnd > headEnd) await writeAligned(core, headEnd, data.subarray(headEnd - offset, midEnd - offset));
    if (end > midEnd && end % ss !== 0) await writePartialSector(core, midEnd, data.subarray(midEnd - offset));
  }
  await core.maybeBarrier();
}

async function writePartialSector(core: VhdxCore, pos: number, part: Buffer): Promise<void> {
  const ss = core.sectorSize;
  const start = Math.floor(pos / ss) * ss;
  const sector = Buffer.alloc(ss);
  await readVirtual(core, start, sector);
  part.copy(sector, pos - start);
  await writeAligned(core, start, sector);
}

/** Writes data (sector aligned on a differencing disk) block by block. */
async function writeAligned(core: VhdxCore, offset: number, data: Buffer): Promise<void> {
  const { bat, blockSize, sectorSize: ss } = core;
  const segments: Segment[] = [];
  const after: (() => Promise<void> | void)[] = [];
  let done = 0;
  while (done < data.length) {
    const { block, inBlock, n, idx } = locate(core, offset + done, data.length - done);
    const state = bat.state(idx);
    const src = blockSource(core, state);
    let fileOff: number;
    if (src === 'file' || src === 'bitmap') {
      fileOff = bat.offset(idx) + inBlock;
      if (src === 'bitmap') after.push(() => core.bitmaps!.setPresent(block, inBlock / ss, (inBlock + n) / ss));
    } else {
      const base = await core.allocate(blockSize, n === blockSize ? 'caller-writes-all' : 'zeros');
      fileOff = base + inBlock;
      // A block that only partly comes from this write keeps the parent's other sectors. Its bitmap
      // slice starts clear: bits left from before mean nothing for a block that was not partly
      // present (a kill inside a barrier can leave a slice written and its BAT entry not), and a
      // stale bit would name a sector of the new block, which reads as zeros, instead of the parent's.
      if (src === 'parent' && n < blockSize) {
        after.push(async () => {
          await core.bitmaps!.clear(block);
          await core.bitmaps!.setPresent(block, inBlock / ss, (inBlock + n) / ss);
          bat.set(idx, PayloadPartiallyPresent, base);
        });
      } else {
        after.push(() => bat.set(idx, PayloadFullyPresent, base));
      }
    }
    const last = segments.at(-1);
    if (last && last.fileOff + (last.to - last.from) === fileOff) last.to = done + n;
    else segments.push({ fileOff, from: done, to: done + n });
    done += n;
  }
  for (const s of segments) await core.file.write(data.subarray(s.from, s.to), s.fileOff);
  core.unsynced = true;
  for (const f of after) await f();
}

/**
 * Makes [offset, offset+length) read as zeros. Whole blocks become PAYLOAD_BLOCK_ZERO (their space
 * is left behind, never reused) unless LeaveBlockAllocated asks to keep them; partial blocks get
 * zeros written where this file holds data.
 */
export async function zeroVirtual(core: VhdxCore, offset: number, length: number): Promise<void> {
  const { bat, blockSize } = core;
  const end = offset + length;
  let pos = offset;
  while (pos < end) {
    const block = Math.floor(pos / blockSize);
    const blockStart = block * blockSize;
    const e = Math.min(end, blockStart + blockSize);
    const whole = pos === blockStart && (e === blockStart + blockSize || e === core.virtualSize);
    const idx = bat.payloadIndex(block);
    const state = bat.state(idx);
    const src = blockSource(core, state);
    const keep = core.meta.leaveBlockAllocated && !core.hasParent;
    if (whole && !keep) {
      if (src !== 'zero' || (core.hasParent && state !== PayloadZero)) bat.set(idx, PayloadZero, 0);
      else if (!core.hasParent && state !== PayloadNotPresent && state !== PayloadZero) bat.set(idx, PayloadZero, 0);
    } else if (src === 'file') {
      await core.file.writeZeros(bat.offset(idx) + (pos - blockStart), e - pos);
      core.unsynced = true;
    } else if (src === 'bitmap' || src === 'parent') {
      for (let p = pos; p < e; p += ZeroChunk.length) await writeVirtual(core, p, ZeroChunk.subarray(0, Math.min(ZeroChunk.length, e - p)));
    }
    pos = e;
  }
  await core.maybeBarrier();
}
