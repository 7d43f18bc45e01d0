import { open, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratchDir } from '../../test/helpers.js';
import { dataRanges } from './sparse.js';

const MiB = 1 << 20;
let dir: { path: string; remove: () => Promise<void> };
beforeAll(async () => { dir = await scratchDir('lifeboat-sparse-'); });
afterAll(() => dir.remove());

describe('dataRanges (SEEK_DATA/SEEK_HOLE)', () => {
  it('finds the data of a sparse file without reading it, clipped to the range asked about', async () => {
    const path = join(dir.path, 'sparse.raw');
    await writeFile(path, '');
    await truncate(path, 64 * MiB);
    const fh = await open(path, 'r+');
    try {
      await fh.write(Buffer.alloc(MiB, 7), 0, MiB, 8 * MiB);
      await fh.write(Buffer.alloc(2 * MiB, 9), 0, 2 * MiB, 40 * MiB);
      await fh.datasync();
      const all = dataRanges(fh.fd, 0, 64 * MiB);
      // Linux has SEEK_DATA and the binding is built at install: it must answer here.
      if (process.platform === 'linux') expect(all).toBeDefined();
      if (all === undefined) return;
      // A filesystem without hole tracking says everything is data: still right, nothing to check.
      if (all.length === 1 && all[0]!.offset === 0 && all[0]!.length === 64 * MiB) return;
      expect(all).toEqual([{ offset: 8 * MiB, length: MiB }, { offset: 40 * MiB, length: 2 * MiB }]);
      expect(dataRanges(fh.fd, 8 * MiB + 4096, 33 * MiB)).toEqual([{ offset: 8 * MiB + 4096, length: MiB - 4096 }, { offset: 40 * MiB, length: MiB + 4096 }]);
      expect(dataRanges(fh.fd, 10 * MiB, 20 * MiB)).toEqual([]);
      expect(dataRanges(fh.fd, 50 * MiB, 100 * MiB)).toEqual([]); // past the last data and past the end
    } finally {
      await fh.close();
    }
  });
});
