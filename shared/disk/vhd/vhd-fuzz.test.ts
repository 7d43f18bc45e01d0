/**
 * Mutated VHDs: open either works or refuses with a LifeboatError, never anything else; and
 * random writes and zeroes on fixed and dynamic VHDs match an in-memory reference.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratchDir } from '../../../test/helpers.js';
import { isLifeboatError } from '../../errors.js';
import { createDisk, openDisk } from '../index.js';
import { vhdChecksum } from './footer.js';

let dir: Awaited<ReturnType<typeof scratchDir>>;
let dynamicImage: Buffer;
let fixedImage: Buffer;
const KiB = 1024;

beforeAll(async () => {
  dir = await scratchDir('lifeboat-vhd-fuzz-');
  for (const type of ['dynamic', 'fixed'] as const) {
    const path = join(dir.path, `seed-${type}.vhd`);
    const d = await createDisk(path, 'vhd', { virtualSize: 5 * 1024 * KiB, type, blockSize: type === 'dynamic' ? 512 * KiB : undefined });
    await d.write(3000, Buffer.alloc(600 * KiB, 0x42));
    await d.write(4 * 1024 * KiB, Buffer.alloc(KiB, 0x43));
    await d.close();
    if (type === 'dynamic') dynamicImage = await readFile(path);
    else fixedImage = await readFile(path);
  }
});
afterAll(async () => { await dir.remove(); });

/** Fixes the footer (at both places) and the header checksums so mutations reach deeper fields. */
function reseal(img: Buffer, dynamic: boolean): void {
  const tail = img.length - 512;
  img.writeUInt32BE(vhdChecksum(img.subarray(tail), 64), tail + 64);
  if (dynamic) {
    img.writeUInt32BE(vhdChecksum(img.subarray(0, 512), 64), 64);
    img.writeUInt32BE(vhdChecksum(img.subarray(512, 1536), 36), 512 + 36);
  }
}

let n = 0;
async function openAndReadAll(bytes: Buffer): Promise<void> {
  const path = join(dir.path, `fuzz-${n++}.vhd`);
  await writeFile(path, bytes);
  try {
    const d = await openDisk(path, { readOnly: true });
    try {
      const buf = Buffer.alloc(Math.min(d.virtualSize, 8 * 1024 * KiB));
      await d.read(0, buf);
      for await (const e of d.extents()) expect(e.offset + e.length).toBeLessThanOrEqual(d.virtualSize);
    } finally {
      await d.close();
    }
  } catch (err) {
    if (!isLifeboatError(err)) throw err;
  } finally {
    await rm(path, { force: true });
  }
}

describe('VHD parser under mutation', () => {
  for (const [name, region, dynamic] of [
    ['dynamic footer copy', [0, 512], true], ['dynamic header', [512, 1536], true], ['BAT', [1536, 2048], true],
    ['dynamic trailing footer', [-512, 0], true], ['fixed footer', [-512, 0], false],
  ] as const) {
    it(`opens or refuses cleanly with mutated ${name} bytes`, async () => {
      const seed = dynamic ? dynamicImage : fixedImage;
      const [from, to] = region[0] < 0 ? [seed.length + region[0], seed.length + region[1]] : region;
      const mutation = fc.array(fc.record({ at: fc.integer({ min: from, max: to - 1 }), byte: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 6 });
      await fc.assert(fc.asyncProperty(mutation, fc.boolean(), async (muts, seal) => {
        const img = Buffer.from(seed);
        for (const m of muts) img[m.at] = m.byte;
        if (seal) reseal(img, dynamic);
        await openAndReadAll(img);
      }), { numRuns: 60 });
    });
  }

  it('refuses truncated images with a LifeboatError', async () => {
    for (const len of [0, 100, 511, 1024, 2000, dynamicImage.length - 1]) {
      const path = join(dir.path, `trunc-${len}.vhd`);
      await writeFile(path, dynamicImage.subarray(0, len));
      if (len === 0) continue;
      await openAndReadAll(dynamicImage.subarray(0, len));
    }
    await expect(openDisk(join(dir.path, 'trunc-1024.vhd'))).rejects.toThrow(/VHD/);
  });
});

describe('VHD against an in-memory reference', () => {
  for (const type of ['dynamic', 'fixed'] as const) {
    it(`keeps a ${type} VHD equal to the reference under random writes and zeroes`, async () => {
      const size = 2 * 1024 * KiB + 512;
      const op = fc.record({ zero: fc.boolean(), offset: fc.integer({ min: 0, max: size - 1 }), length: fc.integer({ min: 1, max: 300 * KiB }), byte: fc.integer({ min: 0, max: 255 }) });
      await fc.assert(fc.asyncProperty(fc.array(op, { maxLength: 15 }), async (ops) => {
        const path = join(dir.path, `prop-${n++}.vhd`);
        const d = await createDisk(path, 'vhd', { virtualSize: size, type, blockSize: type === 'dynamic' ? 256 * KiB : undefined });
        const ref = Buffer.alloc(size);
        for (const o of ops) {
          const len = Math.min(o.length, size - o.offset);
          if (o.zero) { await d.zero(o.offset, len); ref.fill(0, o.offset, o.offset + len); }
          else { await d.write(o.offset, Buffer.alloc(len, o.byte)); ref.fill(o.byte, o.offset, o.offset + len); }
        }
        await d.close();
        const back = await openDisk(path, { readOnly: true });
        const got = Buffer.alloc(size);
        await back.read(0, got);
        await back.close();
        await rm(path);
        expect(got.equals(ref)).toBe(true);
      }), { numRuns: 30 });
    });
  }
});
