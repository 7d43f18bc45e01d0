import { existsSync } from 'node:fs';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { referee, scratchDir } from '../../../test/helpers.js';
import { createDisk, openDisk } from '../index.js';
import { compareDisks, convertDisk, mergeChild, type Progress } from './index.js';
import { firstDifference } from './compare.js';
import { nonZeroRuns } from './zero.js';

let dir: Awaited<ReturnType<typeof scratchDir>>;
beforeAll(async () => { dir = await scratchDir('lifeboat-ops-'); });
afterAll(async () => { await dir.remove(); });
const MiB = 1024 * 1024;

/** A raw file with data at a few offsets and holes elsewhere. */
async function sample(name: string, size: number, writes: Array<[number, number, number]>): Promise<string> {
  const path = join(dir.path, name);
  const d = await createDisk(path, 'raw', { virtualSize: size });
  for (const [off, len, byte] of writes) await d.write(off, Buffer.alloc(len, byte));
  await d.close();
  return path;
}

describe('zero detection', () => {
  it('finds non-zero runs at granule resolution', () => {
    const b = Buffer.alloc(10 * 1024);
    b[5000] = 1;
    b[9000] = 2;
    expect(nonZeroRuns(b, 4096)).toEqual([[4096, 10 * 1024]]);
    expect(nonZeroRuns(Buffer.alloc(100), 64)).toEqual([]);
    expect(firstDifference(Buffer.from('abcd'), Buffer.from('abXd'))).toBe(2);
    expect(firstDifference(Buffer.from('abcd'), Buffer.from('abcd'))).toBe(-1);
  });
});

describe('convertDisk', () => {
  it('copies contents, keeps holes, reports progress to the total, and qemu-img agrees', async () => {
    const src = await sample('conv-src.raw', 20 * MiB + 4096, [[1, 100, 7], [5 * MiB, 3 * MiB, 9], [20 * MiB, 4096, 1]]);
    const s = await openDisk(src, { readOnly: true });
    const seen: Progress[] = [];
    const out = join(dir.path, 'conv-out.raw');
    await convertDisk(s, out, 'raw', { onProgress: (p) => seen.push(p) });
    await s.close();
    expect(seen.at(-1)).toEqual({ done: 20 * MiB + 4096, total: 20 * MiB + 4096 });
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.done).toBeGreaterThanOrEqual(seen[i - 1]!.done);
    await referee('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, out]);
    expect((await stat(out)).blocks * 512).toBeLessThanOrEqual((3 * MiB) + 2 * 65536 + 4096);
  });

  it('never shows a partial image under the output name, writes it 0600, and names a missing folder', async () => {
    const src = await sample('conv-src3.raw', 4 * MiB, [[0, 3 * MiB, 3]]);
    const s = await openDisk(src, { readOnly: true });
    const out = join(dir.path, 'conv-whole.raw');
    const seenUnderName: boolean[] = [];
    await convertDisk(s, out, 'raw', { onProgress: () => seenUnderName.push(existsSync(out)) });
    expect(seenUnderName.length).toBeGreaterThan(0);
    expect(seenUnderName.every((x) => !x)).toBe(true);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    await referee('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, out]);
    expect((await readdir(dir.path)).filter((n) => n.includes('.partial-'))).toEqual([]);
    await expect(convertDisk(s, join(dir.path, 'no-such-folder', 'x.vhdx'), 'vhdx')).rejects.toThrow(/x\.vhdx: folder .*no-such-folder does not exist$/);
    await s.close();
  });

  it('refuses an existing output and leaves it untouched', async () => {
    const src = await sample('conv-src2.raw', MiB, [[0, 10, 1]]);
    const out = join(dir.path, 'conv-existing.raw');
    await writeFile(out, 'keep');
    const s = await openDisk(src, { readOnly: true });
    await expect(convertDisk(s, out, 'raw')).rejects.toThrow(/already exists/);
    await s.close();
    expect((await stat(out)).size).toBe(4);
  });
});

describe('convertDisk of an odd-sized raw disk', () => {
  it('rounds a sector format up to whole sectors, the extra bytes zero', async () => {
    const src = await sample('odd.raw', 3 * MiB + 100, [[3 * MiB + 50, 50, 9]]);
    const s = await openDisk(src, { readOnly: true });
    const out = join(dir.path, 'odd.vhd');
    await convertDisk(s, out, 'vhd');
    const d = await openDisk(out, { readOnly: true });
    expect(d.virtualSize).toBe(3 * MiB + 512);
    expect(await compareDisks(s, d)).toEqual({ identical: true });
    await d.close();
    await s.close();
  });
});

describe('compareDisks', () => {
  it('names the first differing byte, and treats an all-zero extra part as identical', async () => {
    const a = await sample('cmp-a.raw', 12 * MiB, [[3 * MiB, 1000, 5]]);
    const b = await sample('cmp-b.raw', 12 * MiB, [[3 * MiB, 1000, 5], [7 * MiB + 3, 1, 1]]);
    const c = await sample('cmp-c.raw', 16 * MiB, [[3 * MiB, 1000, 5]]);
    const d = await sample('cmp-d.raw', 16 * MiB, [[3 * MiB, 1000, 5], [15 * MiB + 17, 2, 1]]);
    const [da, db, dc, dd] = await Promise.all([a, b, c, d].map((p) => openDisk(p, { readOnly: true })));
    expect(await compareDisks(da!, db!)).toEqual({ identical: false, offset: 7 * MiB + 3 });
    expect(await compareDisks(da!, dc!)).toEqual({ identical: true });
    expect(await compareDisks(dc!, da!)).toEqual({ identical: true });
    expect(await compareDisks(da!, dd!)).toEqual({ identical: false, offset: 15 * MiB + 17 });
    expect(await compareDisks(da!, da!)).toEqual({ identical: true });
    for (const x of [da, db, dc, dd]) await x!.close();
  });
});

describe('mergeChild', () => {
  it('refuses a disk without a parent', async () => {
    const path = await sample('lonely.raw', MiB, []);
    await expect(mergeChild(path)).rejects.toThrow(/has no parent/);
  });
});
