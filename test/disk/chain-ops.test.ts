/**
 * Differencing chains three deep written at random offsets and lengths: flatten equals the
 * reference the test keeps, and merging each layer down keeps what the top reads (mergeChild run
 * twice on a layer changes nothing more).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChildDisk, createDisk, openDisk } from '../../shared/disk/index.js';
import { flatten, mergeChild } from '../../shared/disk/ops/index.js';
import type { DiskImage } from '../../shared/disk/types.js';
import { referee, scratchDir } from '../helpers.js';
import { firstDifferenceFrom } from './vhdx-helpers.js';

let dir: Awaited<ReturnType<typeof scratchDir>>;
beforeAll(async () => { dir = await scratchDir('lifeboat-chain-ops-'); });
afterAll(async () => { await dir.remove(); });

const KiB = 1024;
const Size = 5 * 1024 * KiB + 3 * 512; // not a multiple of the 1 MiB block
const op = fc.record({
  zero: fc.boolean(),
  offset: fc.integer({ min: 0, max: Size - 1 }),
  length: fc.integer({ min: 1, max: 1536 * KiB }),
  byte: fc.integer({ min: 1, max: 255 }),
});
const layers = fc.array(fc.array(op, { minLength: 1, maxLength: 6 }), { minLength: 4, maxLength: 4 });

async function apply(disk: DiskImage, ops: Array<{ zero: boolean; offset: number; length: number; byte: number }>, ref: Buffer): Promise<void> {
  for (const o of ops) {
    const len = Math.min(o.length, Size - o.offset);
    if (o.zero) { await disk.zero(o.offset, len); ref.fill(0, o.offset, o.offset + len); }
    else { await disk.write(o.offset, Buffer.alloc(len, o.byte)); ref.fill(o.byte, o.offset, o.offset + len); }
  }
}

async function expectReads(path: string, ref: Buffer): Promise<void> {
  const d = await openDisk(path, { readOnly: true });
  try {
    expect(await firstDifferenceFrom(d, ref)).toBe(-1);
  } finally {
    await d.close();
  }
}

let run = 0;
describe('differencing chains through the generic operations', () => {
  it('flatten equals the reference; merging each layer down keeps what the top reads', async () => {
    await fc.assert(fc.asyncProperty(layers, async (ls) => {
      const at = join(dir.path, `r${run++}`);
      const paths = [`${at}-base.vhdx`, `${at}-1.vhdx`, `${at}-2.vhdx`, `${at}-top.vhdx`];
      const ref = Buffer.alloc(Size);
      const base = await createDisk(paths[0]!, 'vhdx', { virtualSize: Size, blockSize: 1024 * KiB });
      await apply(base, ls[0]!, ref);
      await base.close();
      for (let i = 1; i < 4; i++) {
        const child = await createChildDisk(paths[i]!, paths[i - 1]!);
        await apply(child, ls[i]!, ref);
        await child.close();
      }

      const flat = `${at}-flat.raw`;
      await flatten(paths[3]!, flat, { format: 'raw' });
      expect((await readFile(flat)).equals(ref)).toBe(true);
      const flatVhdx = `${at}-flat.vhdx`;
      await flatten(paths[3]!, flatVhdx);
      await referee('qemu-img', ['compare', '-f', 'raw', '-F', 'vhdx', flat, flatVhdx]);
      await referee('qemu-img', ['check', '-f', 'vhdx', flatVhdx]);

      for (let i = 3; i >= 1; i--) {
        await mergeChild(paths[i]!);
        await mergeChild(paths[i]!); // a rerun (as after a crash) changes nothing
        await expectReads(paths[3]!, ref);
        await expectReads(paths[i - 1]!, ref);
      }
      await referee('qemu-img', ['compare', '-f', 'raw', '-F', 'vhdx', flat, paths[0]!]);
    }), { numRuns: 3 });
  });

  it('finishes a merge interrupted after part of the child reached the parent', async () => {
    const basePath = join(dir.path, 'crash-base.vhdx');
    const topPath = join(dir.path, 'crash-top.vhdx');
    const ref = Buffer.alloc(Size);
    const base = await createDisk(basePath, 'vhdx', { virtualSize: Size, blockSize: 1024 * KiB });
    await apply(base, [{ zero: false, offset: 0, length: Size, byte: 1 }], ref);
    await base.close();
    const top = await createChildDisk(topPath, basePath);
    await apply(top, [{ zero: false, offset: 100, length: 700 * KiB, byte: 2 }, { zero: true, offset: 2048 * KiB, length: 900 * KiB, byte: 0 },
      { zero: false, offset: 4096 * KiB + 5, length: 1000 * KiB, byte: 3 }], ref);
    await top.close();

    // The first of the child's own extents reaches the parent, then the process "dies": the parent
    // has changed (a new DataWriteGuid) but the child's link to it was never renewed.
    const child = await openDisk(topPath, { readOnly: true });
    const parent = await openDisk(basePath);
    const first = (await child.extents({ layer: 'own' })[Symbol.asyncIterator]().next()).value!;
    const buf = Buffer.alloc(first.length);
    await child.read(first.offset, buf);
    await parent.write(first.offset, buf);
    await parent.close();
    await child.close();
    await expect(openDisk(topPath, { readOnly: true })).rejects.toThrow(/does not match/);

    await mergeChild(topPath);
    await expectReads(topPath, ref);
    await expectReads(basePath, ref);
  });
});
