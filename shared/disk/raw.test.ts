import { open, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { referee, scratchDir } from '../../test/helpers.js';
import { createDisk, openDisk } from './index.js';
import { dataRanges } from './sparse.js';
import type { DiskImage, Extent } from './types.js';

let dir: Awaited<ReturnType<typeof scratchDir>>;
beforeAll(async () => { dir = await scratchDir('lifeboat-raw-'); });
afterAll(async () => { await dir.remove(); });

const MiB = 1024 * 1024;
const blocksOf = async (path: string) => (await stat(path)).blocks;
async function collect(it: AsyncIterable<Extent>): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const e of it) out.push(e);
  return out;
}

describe('raw images', () => {
  it('reads back what it wrote, and qemu-img sees the same bytes', async () => {
    const path = join(dir.path, 'rw.raw');
    const disk = await createDisk(path, 'raw', { virtualSize: 8 * MiB });
    const data = Buffer.alloc(10_000, 0x5a);
    await disk.write(3 * MiB + 7, data);
    const back = Buffer.alloc(10_000);
    await disk.read(3 * MiB + 7, back);
    expect(back.equals(data)).toBe(true);
    await disk.close();
    const ref = join(dir.path, 'rw-ref.raw');
    const refData = Buffer.alloc(8 * MiB);
    data.copy(refData, 3 * MiB + 7);
    await writeFile(ref, refData);
    await referee('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', path, ref]);
  });

  it('stays sparse: zero writes and zero() allocate nothing, holes are not extents', async () => {
    const path = join(dir.path, 'sparse.raw');
    const disk = await createDisk(path, 'raw', { virtualSize: 16 * MiB });
    await disk.write(0, Buffer.alloc(4 * MiB));
    await disk.zero(4 * MiB, 8 * MiB);
    await disk.flush();
    expect(await blocksOf(path)).toBe(0);
    await disk.write(9 * MiB, Buffer.alloc(4096, 1));
    expect(await collect(disk.extents())).toEqual([{ offset: 9 * MiB, length: 4096, kind: 'data' }]);
    await disk.zero(9 * MiB, 4096);
    expect(await collect(disk.extents())).toEqual([]);
    // Zeroing an unaligned range around one written block allocates none of its neighbours.
    await disk.flush();
    const before = await blocksOf(path);
    await disk.write(10 * MiB + 4096, Buffer.alloc(4096, 2));
    await disk.zero(10 * MiB + 100, 3 * 4096);
    await disk.flush();
    expect(await blocksOf(path)).toBeLessThanOrEqual(before + 8);
    expect(await collect(disk.extents())).toEqual([]);
    await disk.write(9 * MiB, Buffer.alloc(4096, 1));
    // Without scanning, the filesystem's data ranges (where it can say; else the whole range).
    const fh = await open(path, 'r');
    const holesKnown = dataRanges(fh.fd, 0, 16 * MiB) !== undefined;
    await fh.close();
    expect(await collect(disk.extents({ offset: MiB, length: 2 * MiB, scan: false }))).toEqual(holesKnown ? [] : [{ offset: MiB, length: 2 * MiB, kind: 'data' }]);
    expect(await collect(disk.extents({ offset: 8 * MiB, length: 2 * MiB, scan: false }))).toEqual(
      holesKnown ? [{ offset: 9 * MiB, length: 4096, kind: 'data' }] : [{ offset: 8 * MiB, length: 2 * MiB, kind: 'data' }],
    );
    await disk.zero(9 * MiB, 4096);
    const own = await collect(disk.extents({ layer: 'own' }));
    expect(own).toEqual([{ offset: 0, length: 16 * MiB, kind: 'zero' }]);
    const info = await disk.info();
    expect(info).toMatchObject({ format: 'raw', subformat: 'sparse', virtualSize: 16 * MiB, parentChain: [] });
    await disk.close();
  });

  it('refuses ranges outside the disk, writes when read-only, and shrinking', async () => {
    const path = join(dir.path, 'bounds.raw');
    const disk = await createDisk(path, 'raw', { virtualSize: MiB });
    await expect(disk.write(MiB - 1, Buffer.alloc(2))).rejects.toThrow(/outside the disk/);
    await expect(disk.resize(MiB - 512)).rejects.toThrow(/only grow/);
    await disk.resize(2 * MiB);
    expect(disk.virtualSize).toBe(2 * MiB);
    await disk.close();
    const ro = await openDisk(path, { readOnly: true });
    expect(ro.virtualSize).toBe(2 * MiB);
    await expect(ro.write(0, Buffer.alloc(1, 1))).rejects.toThrow(/read-only/);
    await ro.close();
    await expect(createDisk(path, 'raw', { virtualSize: MiB })).rejects.toThrow(/already exists/);
  });

  it('matches an in-memory reference under random writes and zeroes', async () => {
    const size = 256 * 1024;
    let n = 0;
    const op = fc.record({
      zero: fc.boolean(),
      offset: fc.integer({ min: 0, max: size - 1 }),
      length: fc.integer({ min: 1, max: 20_000 }),
      byte: fc.integer({ min: 0, max: 255 }),
    });
    await fc.assert(fc.asyncProperty(fc.array(op, { maxLength: 25 }), async (ops) => {
      const disk: DiskImage = await createDisk(join(dir.path, `prop-${n++}.raw`), 'raw', { virtualSize: size });
      const ref = Buffer.alloc(size);
      try {
        for (const o of ops) {
          const len = Math.min(o.length, size - o.offset);
          if (o.zero) { await disk.zero(o.offset, len); ref.fill(0, o.offset, o.offset + len); }
          else { const d = Buffer.alloc(len, o.byte); await disk.write(o.offset, d); d.copy(ref, o.offset); }
        }
        const got = Buffer.alloc(size);
        await disk.read(0, got);
        expect(got.equals(ref)).toBe(true);
        for (const e of await collect(disk.extents())) expect(e.kind).toBe('data');
        const covered = Buffer.alloc(size);
        for (const e of await collect(disk.extents())) ref.copy(covered, e.offset, e.offset, e.offset + e.length);
        expect(covered.equals(ref)).toBe(true);
      } finally {
        await disk.close();
      }
    }), { numRuns: 40 });
  });
});
