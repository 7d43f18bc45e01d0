/**
 * Differencing VHDX chains: three layers written by us at random offsets and lengths read like an
 * in-memory model, flatten to what qemu compares identical, and refuse wrong or missing parents.
 * qemu cannot open VHDX differencing disks, so chains are checked by flattening through our reader.
 */
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChildDisk, createDisk, openDisk } from '../../shared/disk/index.js';
import type { DiskImage } from '../../shared/disk/types.js';
import type { VhdxImage } from '../../shared/disk/vhdx/image.js';
import { makeLocator } from '../../shared/disk/vhdx/parent.js';
import { rewriteParentLocator } from '../../shared/disk/vhdx/relink.js';
import { referee, scratchDir } from '../helpers.js';
import { firstDifferenceFrom, pattern, rng } from './vhdx-helpers.js';

const K = 1024;
const M = 1024 * K;

let dir: { path: string; remove: () => Promise<void> };
beforeAll(async () => { dir = await scratchDir('lifeboat-vhdx-chain-'); });
afterAll(async () => { await dir.remove(); });

/** Random writes and zeroes applied to the disk and the model alike. */
async function scribble(d: DiskImage, model: Buffer, seed: number, ops: number): Promise<void> {
  const r = rng(seed);
  for (let i = 0; i < ops; i++) {
    const off = Math.floor(r() * model.length);
    const len = Math.min(model.length - off, 1 + Math.floor(r() * (r() < 0.2 ? 3 * M : 64 * K)));
    if (r() < 0.2) {
      await d.zero(off, len);
      model.fill(0, off, off + len);
    } else {
      const data = pattern(Buffer.alloc(len), seed * 1000 + i);
      await d.write(off, data);
      data.copy(model, off);
    }
  }
}

async function flattenTo(d: DiskImage, path: string): Promise<void> {
  const out = await createDisk(path, 'vhdx', { virtualSize: d.virtualSize, blockSize: M });
  const buf = Buffer.alloc(M);
  for await (const e of d.extents()) {
    for (let off = e.offset; off < e.offset + e.length; off += M) {
      const n = Math.min(M, e.offset + e.length - off);
      await d.read(off, buf.subarray(0, n));
      await out.write(off, buf.subarray(0, n));
    }
  }
  await out.close();
}

describe('differencing chains', () => {
  for (const lss of [512, 4096]) {
    it(`three layers with ${lss}-byte sectors read like the model, before and after reopening`, async () => {
      const size = 21 * M + 3 * 4096;
      const base = join(dir.path, `base-${lss}.vhdx`);
      const mid = join(dir.path, `mid-${lss}.vhdx`);
      const top = join(dir.path, `top-${lss}.vhdx`);
      const model = Buffer.alloc(size);
      const b = await createDisk(base, 'vhdx', { virtualSize: size, blockSize: M, logicalSectorSize: lss });
      await scribble(b, model, 1, 30);
      await b.close();
      const baseModel = Buffer.from(model);
      const m = await createChildDisk(mid, base);
      await scribble(m, model, 2, 40);
      await m.close();
      const midModel = Buffer.from(model);
      const t = await createChildDisk(top, mid, { blockSize: 2 * M });
      await scribble(t, model, 3, 40);
      expect(await firstDifferenceFrom(t, model)).toBe(-1);
      await t.close();

      const again = await openDisk(top, { readOnly: true });
      try {
        expect(await firstDifferenceFrom(again, model)).toBe(-1);
        expect(await firstDifferenceFrom(again.parent!, midModel)).toBe(-1);
        expect(await firstDifferenceFrom(again.parent!.parent!, baseModel)).toBe(-1);
        const info = await again.info();
        expect(info.subformat).toBe('differencing');
        expect(info.parentChain).toEqual([mid, base]);
        // Chain extents cover every non-zero byte.
        const ext: { offset: number; length: number }[] = [];
        for await (const e of again.extents()) ext.push(e);
        let j = 0;
        for (let i = 0; i < size; i += 512) {
          if (model.subarray(i, i + 512).some((x) => x !== 0)) {
            while (j < ext.length && ext[j]!.offset + ext[j]!.length <= i) j++;
            expect(ext[j] && ext[j]!.offset <= i).toBe(true);
          }
        }
        if (lss === 512) {
          const flat = join(dir.path, `flat-${lss}.vhdx`);
          await flattenTo(again, flat);
          await writeFile(`${flat}.raw`, model);
          await referee('qemu-img', ['check', '-q', '-f', 'vhdx', flat]);
          await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', flat, `${flat}.raw`]);
        }
      } finally {
        await again.close();
      }
    });
  }

  it("'own' extents list exactly what the child defines", async () => {
    const base = join(dir.path, 'own-base.vhdx');
    const child = join(dir.path, 'own-child.vhdx');
    await (await createDisk(base, 'vhdx', { virtualSize: 8 * M, blockSize: M })).close();
    const c = await createChildDisk(child, base);
    await c.write(512, Buffer.alloc(1024, 1));
    await c.write(3 * M - 512, Buffer.alloc(M + 1024, 2));
    await c.zero(6 * M, M);
    await c.zero(7 * M + 4096, 4096);
    const own = [];
    for await (const e of c.extents({ layer: 'own' })) own.push(e);
    await c.close();
    expect(own).toEqual([
      { offset: 512, length: 1024, kind: 'data' },
      { offset: 3 * M - 512, length: M + 1024, kind: 'data' },
      { offset: 6 * M, length: M, kind: 'zero' },
      { offset: 7 * M + 4096, length: 4096, kind: 'data' },
    ]);
  });

  it('finds a moved chain by its relative path, and refuses a parent that changed or is missing', async () => {
    const sub = join(dir.path, 'moving');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(sub);
    const base = join(sub, 'p.vhdx');
    const child = join(sub, 'c.vhdx');
    const b = await createDisk(base, 'vhdx', { virtualSize: 4 * M, blockSize: M });
    await b.write(0, Buffer.alloc(4096, 7));
    await b.close();
    await (await createChildDisk(child, base)).close();
    const moved = join(dir.path, 'moved');
    await rename(sub, moved);
    const c = await openDisk(join(moved, 'c.vhdx'), { readOnly: true });
    const buf = Buffer.alloc(4096);
    await c.read(0, buf);
    expect(buf.every((x) => x === 7)).toBe(true);
    await c.close();

    const p = await openDisk(join(moved, 'p.vhdx'));
    await p.write(0, Buffer.alloc(512, 9));
    await p.close();
    await expect(openDisk(join(moved, 'c.vhdx'))).rejects.toThrow(/does not match its locator/);

    // An interrupted merge: accept the changed parent, then link to it again.
    const { vhdxDriver } = await import('../../shared/disk/vhdx/driver.js');
    const reopen = (x: string) => vhdxDriver.open(x, { readOnly: true, openParent: reopen });
    const relink = await vhdxDriver.open(join(moved, 'c.vhdx'), { acceptChangedParent: true, openParent: reopen });
    await relink.setParent!(join(moved, 'p.vhdx'));
    await relink.close();
    const ok = await openDisk(join(moved, 'c.vhdx'), { readOnly: true });
    await ok.read(0, buf);
    expect(buf.subarray(0, 512).every((x) => x === 9)).toBe(true);
    await ok.close();

    await rename(join(moved, 'p.vhdx'), join(moved, 'gone.vhdx'));
    await expect(openDisk(join(moved, 'c.vhdx'))).rejects.toMatchObject({ code: 'not_found', message: expect.stringMatching(/parent not found/) });
  });

  it('refuses to make a disk its own ancestor', async () => {
    const x = join(dir.path, 'loop-x.vhdx');
    const a = join(dir.path, 'loop-a.vhdx');
    const b = join(dir.path, 'loop-b.vhdx');
    await (await createDisk(x, 'vhdx', { virtualSize: 4 * M, blockSize: M })).close();
    await (await createChildDisk(a, x)).close();
    await (await createChildDisk(b, a)).close();
    const da = await openDisk(a);
    await expect(da.setParent!(b)).rejects.toMatchObject({ code: 'invalid_argument', message: expect.stringMatching(/one of its children/) });
    await expect(da.setParent!(a)).rejects.toMatchObject({ code: 'invalid_argument' });
    // Forge the loop underneath the check: opening then stops instead of recursing.
    const db = (await openDisk(b, { readOnly: true })) as VhdxImage;
    const guid = db.dataWriteGuid;
    await db.close();
    await rewriteParentLocator((da as VhdxImage).core, makeLocator(a, b, guid));
    await da.close();
    await expect(openDisk(b, { readOnly: true })).rejects.toMatchObject({ code: 'corrupt', message: expect.stringMatching(/parent chain loops/) });
  });
});
