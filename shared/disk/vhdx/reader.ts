/**
 * Reading virtual contents and listing extents. Reads go straight into the caller's buffer with
 * one positional read per run of blocks that are contiguous in the file; sector bitmaps split a
 * partially present block between this file and the parent.
 */
import type { Extent } from '../types.js';
import { PayloadFullyPresent, PayloadPartiallyPresent, PayloadZero } from './bat.js';
import type { VhdxCore } from './core.js';

/** Where a block's bytes come from. */
export type Source = 'file' | 'bitmap' | 'parent' | 'zero';

export function blockSource(core: VhdxCore, state: number): Source {
  if (state === PayloadFullyPresent) return 'file';
  if (state === PayloadPartiallyPresent) return core.hasParent ? 'bitmap' : 'file';
  if (core.hasParent && state !== PayloadZero) return 'parent';
  return 'zero';
}

/** The block holding virtual offset pos, the offset inside it, and how much of remaining it covers. */
export function locate(core: VhdxCore, pos: number, remaining: number): { block: number; inBlock: number; n: number; idx: number } {
  const block = Math.floor(pos / core.blockSize);
  const inBlock = pos - block * core.blockSize;
  return { block, inBlock, n: Math.min(core.blockSize - inBlock, remaining), idx: core.bat.payloadIndex(block) };
}

export async function readVirtual(core: VhdxCore, offset: number, buf: Buffer): Promise<void> {
  const { bat, blockSize } = core;
  let done = 0;
  while (done < buf.length) {
    const pos = offset + done;
    const { block, inBlock, idx, n: first } = locate(core, pos, buf.length - done);
    let n = first;
    const src = blockSource(core, bat.state(idx));
    if (src === 'file') {
      const fileOff = bat.offset(idx) + inBlock;
      // Extend the run over following blocks that sit right after this one in the file.
      for (let b = block + 1; done + n < buf.length; b++) {
        const j = bat.payloadIndex(b);
        if (blockSource(core, bat.state(j)) !== 'file' || bat.offset(j) !== fileOff + n) break;
        n += Math.min(blockSize, buf.length - done - n);
      }
      await core.file.read(buf.subarray(done, done + n), fileOff, 'payload block');
    } else if (src === 'bitmap') {
      await readPartial(core, block, inBlock, buf.subarray(done, done + n));
    } else if (src === 'parent') {
      await readParent(core, pos, buf.subarray(done, done + n));
    } else {
      buf.fill(0, done, done + n);
    }
    done += n;
  }
}

async function readPartial(core: VhdxCore, block: number, inBlock: number, out: Buffer): Promise<void> {
  const ss = core.sectorSize;
  const first = Math.floor(inBlock / ss);
  const last = Math.ceil((inBlock + out.length) / ss);
  const base = core.bat.offset(core.bat.payloadIndex(block));
  const blockStart = block * core.blockSize;
  for (const run of await core.bitmaps!.runs(block, first, last)) {
    const s = Math.max(run.start * ss, inBlock);
    const e = Math.min(run.end * ss, inBlock + out.length);
    const part = out.subarray(s - inBlock, e - inBlock);
    if (run.present) await core.file.read(part, base + s, 'payload block');
    else await readParent(core, blockStart + s, part);
  }
}

/** Reads from the parent; past the parent's end (a grown child) reads zeros. */
export async function readParent(core: VhdxCore, pos: number, out: Buffer): Promise<void> {
  const parent = core.parent!;
  const avail = Math.max(0, Math.min(out.length, parent.virtualSize - pos));
  if (avail > 0) await parent.read(pos, out.subarray(0, avail));
  if (avail < out.length) out.fill(0, avail);
}

/** Extents of [from, to) per ExtentQuery's layer semantics, not yet coalesced. */
async function* rawExtents(core: VhdxCore, from: number, to: number, layer: 'chain' | 'own'): AsyncGenerator<Extent> {
  const { bat, blockSize, sectorSize: ss } = core;
  // Consecutive ranges that defer to the parent are asked of it in one query.
  let parentFrom = -1;
  let parentTo = -1;
  async function* flushParent(): AsyncGenerator<Extent> {
    if (parentFrom < 0) return;
    const end = Math.min(parentTo, core.parent!.virtualSize);
    if (end > parentFrom) {
      for await (const x of core.parent!.extents({ offset: parentFrom, length: end - parentFrom, layer: 'chain' })) {
        if (x.kind === 'data') yield x;
      }
    }
    parentFrom = parentTo = -1;
  }
  const extendParent = (s: number, e: number) => {
    if (parentTo === s) parentTo = e;
    else { parentFrom = s; parentTo = e; }
  };
  for (let block = Math.floor(from / blockSize); block * blockSize < to; block++) {
    const s = Math.max(from, block * blockSize);
    const e = Math.min(to, (block + 1) * blockSize);
    const idx = bat.payloadIndex(block);
    const src = blockSource(core, bat.state(idx));
    if (src === 'parent') {
      if (layer !== 'chain') continue;
      if (parentFrom >= 0 && parentTo !== s) yield* flushParent();
      extendParent(s, e);
      continue;
    }
    if (src === 'file') {
      yield* flushParent();
      yield { offset: s, length: e - s, kind: 'data' };
    } else if (src === 'zero') {
      yield* flushParent();
      if (layer === 'own' && bat.state(idx) === PayloadZero) yield { offset: s, length: e - s, kind: 'zero' };
    } else {
      const base = block * blockSize;
      for (const run of await core.bitmaps!.runs(block, Math.floor((s - base) / ss), Math.ceil((e - base) / ss))) {
        const rs = Math.max(s, base + run.start * ss);
        const re = Math.min(e, base + run.end * ss);
        if (run.present) {
          yield* flushParent();
          yield { offset: rs, length: re - rs, kind: 'data' };
        } else if (layer === 'chain') {
          if (parentFrom >= 0 && parentTo !== rs) yield* flushParent();
          extendParent(rs, re);
        }
      }
    }
  }
  yield* flushParent();
}

/** Coalesced extents in ascending order. */
export async function* listExtents(core: VhdxCore, from: number, to: number, layer: 'chain' | 'own'): AsyncGenerator<Extent> {
  let cur: Extent | undefined;
  for await (const x of rawExtents(core, from, to, layer)) {
    if (cur && cur.kind === x.kind && cur.offset + cur.length === x.offset) {
      cur.length += x.length;
      continue;
    }
    if (cur) yield cur;
    cur = { ...x };
  }
  if (cur) yield cur;
}
