import { randomBytes } from 'node:crypto';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDisk, openDisk } from '../../shared/disk/index.js';
import type { DiskImage, Extent } from '../../shared/disk/index.js';
import { scratchDir } from '../../test/helpers.js';
import { xxh3 } from '@node-rs/xxhash';
import { MapBlockSize, blockDigest, mapFileSize, zeroDigest } from './blockmap.js';
import { ScanTracker } from './scan.js';

const B = MapBlockSize;
let dir: string;
let remove: () => Promise<void>;
beforeAll(async () => ({ path: dir, remove } = await scratchDir('lifeboat-agent-tracker-')));
afterAll(() => remove());

describe('block digests', () => {
  it('are the low 32 bits of the seeded XXH3-64 the map format specifies, whichever seed came before', () => {
    const seeds = [1n, 0xfedcba9876543210n, 1n, 2n ** 64n - 1n];
    const block = randomBytes(MapBlockSize);
    for (const seed of seeds) {
      expect(blockDigest(block, seed)).toBe(Number(xxh3.xxh64(block, seed) & 0xffffffffn));
      expect(zeroDigest(seed)).toBe(Number(xxh3.xxh64(Buffer.alloc(MapBlockSize), seed) & 0xffffffffn));
    }
  });
});

let n = 0;
async function fixture(size: number, options: { bufferSize?: number; consultExtents?: boolean } = {}) {
  const path = join(dir, `d${n++}.raw`);
  await (await createDisk(path, 'raw', { virtualSize: size })).close();
  const tracker = () => new ScanTracker({ mapPath: `${path}.map`, pendingPath: `${path}.map.pending`, ...options });
  return { path, tracker };
}

async function collect(tracker: ScanTracker, disk: DiskImage, commit = true): Promise<Extent[]> {
  const cycle = await tracker.begin(disk);
  const out: Extent[] = [];
  for await (const e of cycle.extents()) out.push({ ...e });
  if (commit) await cycle.commit();
  else await cycle.abandon();
  return out;
}

describe('scan tracker', () => {
  it('reports exactly the 64 KiB blocks written, coalesced, with a short last block', async () => {
    const size = 40 * B + 1000;
    for (const bufferSize of [2 * B, 8 << 20]) {
      const { path, tracker } = await fixture(size, { bufferSize });
      const disk = await openDisk(path);
      await disk.write(7 * B, randomBytes(B));
      // First cycle without a baseline: everything counts as changed; holes as zero extents.
      expect(await tracker().hasBaseline()).toBe(false);
      expect(await collect(tracker(), disk)).toEqual([
        { offset: 0, length: 7 * B, kind: 'zero' }, { offset: 7 * B, length: B, kind: 'data' }, { offset: 8 * B, length: size - 8 * B, kind: 'zero' },
      ]);
      expect(await collect(tracker(), disk)).toEqual([]);
      await disk.write(0, Buffer.from([1]));
      await disk.write(5 * B + 100, randomBytes(200));
      await disk.write(10 * B - 1, Buffer.from([2, 3]));
      await disk.write(11 * B, randomBytes(B));
      await disk.write(size - 10, Buffer.from('tail'));
      expect(await collect(tracker(), disk)).toEqual([
        { offset: 0, length: B, kind: 'data' },
        { offset: 5 * B, length: B, kind: 'data' },
        { offset: 9 * B, length: 3 * B, kind: 'data' },
        { offset: 40 * B, length: 1000, kind: 'data' },
      ]);
      // Zeros written over data travel as a zero extent.
      await disk.write(7 * B, Buffer.alloc(B));
      expect(await collect(tracker(), disk)).toEqual([{ offset: 7 * B, length: B, kind: 'zero' }]);
      await disk.close();
    }
  });

  it('forgets changes only when the cycle is committed', async () => {
    const { path, tracker } = await fixture(16 * B);
    const disk = await openDisk(path);
    await collect(tracker(), disk);
    await disk.write(3 * B, Buffer.from('x'));
    const changed = [{ offset: 3 * B, length: B, kind: 'data' }];
    expect(await collect(tracker(), disk, false)).toEqual(changed);
    // A cycle read but never committed nor abandoned (the agent died before the service's ack).
    const cycle = await tracker().begin(disk);
    for await (const _ of cycle.extents());
    expect(await collect(tracker(), disk)).toEqual(changed);
    expect(await collect(tracker(), disk)).toEqual([]);
    await disk.close();
  });

  it('counts the blocks of a grown disk as changed', async () => {
    const { path, tracker } = await fixture(8 * B);
    let disk = await openDisk(path);
    await disk.write(0, randomBytes(8 * B));
    await collect(tracker(), disk);
    await disk.resize(12 * B);
    await disk.close();
    disk = await openDisk(path);
    expect(await collect(tracker(), disk)).toEqual([{ offset: 8 * B, length: 4 * B, kind: 'zero' }]);
    await disk.close();
  });

  it('skips unallocated ranges without reading them when it consults extents', async () => {
    const { path, tracker } = await fixture(64 * B, { consultExtents: true });
    const disk = await openDisk(path);
    await disk.write(20 * B, randomBytes(2 * B));
    const cycle = await tracker().begin(disk);
    for await (const _ of cycle.extents());
    expect((cycle as unknown as { readBytes: number }).readBytes).toBe(2 * B);
    await disk.close();
  });

  it('keeps its map at 4 bytes per 64 KiB block: 64 MiB per TiB', async () => {
    expect(mapFileSize(2 ** 40) - 32).toBe(64 * 2 ** 20);
    const { path, tracker } = await fixture(100 * B + 1);
    const disk = await openDisk(path);
    await collect(tracker(), disk);
    expect((await stat(`${path}.map`)).size).toBe(mapFileSize(100 * B + 1));
    expect(mapFileSize(100 * B + 1)).toBe(32 + 4 * 101);
    await disk.close();
  });

  it('refuses a damaged map with an error naming it', async () => {
    const { path, tracker } = await fixture(4 * B);
    const disk = await openDisk(path);
    await writeFile(`${path}.map`, 'not a map');
    await expect(collect(tracker(), disk)).rejects.toThrow(/block map is damaged/);
    await disk.close();
  });

  it('reports exactly the blocks whose contents changed, for any writes (property)', async () => {
    const blocks = 24;
    const { path, tracker } = await fixture(blocks * B, { bufferSize: 4 * B });
    const disk = await openDisk(path);
    await collect(tracker(), disk);
    const shadow = Buffer.alloc(blocks * B);
    const write = fc.record({ offset: fc.integer({ min: 0, max: blocks * B - 1 }), length: fc.integer({ min: 1, max: 2 * B }), byte: fc.integer({ min: 0, max: 255 }) });
    await fc.assert(fc.asyncProperty(fc.array(write, { maxLength: 6 }), async (writes) => {
      const before = Buffer.from(shadow);
      for (const w of writes) {
        const data = Buffer.alloc(Math.min(w.length, blocks * B - w.offset), w.byte);
        await disk.write(w.offset, data);
        data.copy(shadow, w.offset);
      }
      const expected = new Set<number>();
      for (let b = 0; b < blocks; b++) if (!before.subarray(b * B, (b + 1) * B).equals(shadow.subarray(b * B, (b + 1) * B))) expected.add(b);
      const got = new Set<number>();
      for (const e of await collect(tracker(), disk)) for (let o = e.offset; o < e.offset + e.length; o += B) got.add(o / B);
      expect([...got].sort((a, b) => a - b)).toEqual([...expected].sort((a, b) => a - b));
    }), { numRuns: 25 });
    await disk.close();
  });
});
