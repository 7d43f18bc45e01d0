/**
 * VHDX against the referee: images made and written by qemu read identically by us, and images
 * made and written by us pass `qemu-img check` and compare identical to a raw reference.
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { vhdxDriver } from '../../shared/disk/vhdx/driver.js';
import { referee, scratchDir } from '../helpers.js';
import { firstDifference, openVhdx, pattern, rng } from './vhdx-helpers.js';

const K = 1024;
const M = 1024 * K;

let dir: { path: string; remove: () => Promise<void> };
beforeAll(async () => { dir = await scratchDir('lifeboat-vhdx-qemu-'); });
afterAll(async () => { await dir.remove(); });

describe('images made and written by qemu', () => {
  const cases = [
    { sub: 'dynamic', bs: 1 * M, size: 37 * M + 1536 },
    { sub: 'dynamic', bs: 8 * M, size: 100 * M + 512 },
    { sub: 'dynamic', bs: 32 * M, size: 200 * M + 4096 },
    { sub: 'dynamic', bs: 256 * M, size: 300 * M },
    { sub: 'fixed', bs: 1 * M, size: 20 * M + 512 },
    { sub: 'fixed', bs: 8 * M, size: 50 * M + 512 },
  ];
  for (const c of cases) {
    it(`reads a ${c.sub} image with ${c.bs / M} MiB blocks and ${c.size} bytes`, async () => {
      const img = join(dir.path, `q-${c.sub}-${c.bs}.vhdx`);
      const raw = `${img}.raw`;
      await referee('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', `subformat=${c.sub},block_size=${c.bs}`, img, String(c.size)]);
      const writes = [
        [0, 64 * K], [c.bs - 4 * K, 8 * K], [3 * c.bs + 512, M + 512], [Math.floor(c.size / 2 / 512) * 512, 128 * K], [c.size - 1536, 1536],
      ].filter(([o, l]) => o! + l! <= c.size);
      const args = writes.flatMap(([o, l], i) => ['-c', `write -q -P 0x${(0x11 * (i + 1)).toString(16)} ${o} ${l}`]);
      await referee('qemu-io', ['-f', 'vhdx', ...args, img]);
      await referee('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', img, raw]);
      const d = await openVhdx(img, true);
      try {
        expect(d.virtualSize).toBe(c.size);
        expect(d.blockSize).toBe(c.bs);
        expect(await firstDifference(d, raw)).toBe(-1);
        expect((await d.info()).subformat).toBe(c.sub);
        // Every byte qemu wrote lies inside an extent we report.
        const ext = [];
        for await (const e of d.extents()) ext.push(e);
        for (const [o, l] of writes) expect(ext.some((e) => e.offset <= o! && o! + l! <= e.offset + e.length)).toBe(true);
      } finally {
        await d.close();
      }
    });
  }
});

describe('images made by qemu, then written by us', () => {
  for (const sub of ['dynamic', 'fixed']) {
    it(`writes, zeroes and grows a ${sub} qemu image; qemu checks and compares it`, async () => {
      const img = join(dir.path, `mixed-${sub}.vhdx`);
      const raw = `${img}.raw`;
      const size = 30 * M + 512;
      await referee('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', `subformat=${sub},block_size=${2 * M}`, img, String(size)]);
      await referee('qemu-io', ['-f', 'vhdx', '-c', 'write -q -P 0x5a 1M 3M', '-c', 'write -q -P 0x6b 20M 512k', img]);
      await referee('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', img, raw]);
      const ref = await open(raw, 'r+');
      const d = await openVhdx(img);
      const r = rng(sub.length);
      try {
        for (let i = 0; i < 30; i++) {
          const off = Math.floor(r() * size);
          const len = Math.min(size - off, 1 + Math.floor(r() * 3 * M));
          if (r() < 0.3) {
            await d.zero(off, len);
            await ref.write(Buffer.alloc(len), 0, len, off);
          } else {
            const data = pattern(Buffer.alloc(len), 1000 + i);
            await d.write(off, data);
            await ref.write(data, 0, len, off);
          }
        }
        await d.resize(size + 5 * M);
        await ref.truncate(size + 5 * M);
        await d.write(size + M, Buffer.alloc(4096, 0x7c));
        await ref.write(Buffer.alloc(4096, 0x7c), 0, 4096, size + M);
      } finally {
        await d.close();
        await ref.close();
      }
      await referee('qemu-img', ['check', '-q', '-f', 'vhdx', img]);
      await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', img, raw]);
      if (sub === 'fixed') {
        // Still fully provisioned after growing: no block is left to the parent-less default
        // (qemu marks a fixed disk's untouched blocks PAYLOAD_BLOCK_ZERO; ours become FULLY_PRESENT).
        const again = await openVhdx(img, true);
        let covered = 0;
        for await (const e of again.extents({ layer: 'own' })) {
          expect(e.offset).toBe(covered);
          if (e.offset >= size) expect(e.kind).toBe('data');
          covered = e.offset + e.length;
        }
        await again.close();
        expect(covered).toBe(size + 5 * M);
      }
    });
  }
});

describe('images made and written by us', () => {
  const cases = [
    { type: 'dynamic', bs: 1 * M, lss: 512, size: 29 * M + 512 },
    { type: 'dynamic', bs: 8 * M, lss: 4096, size: 70 * M + 4096 },
    { type: 'dynamic', bs: 32 * M, lss: 512, size: 100 * M + 1024 },
    { type: 'fixed', bs: 1 * M, lss: 512, size: 12 * M + 512 },
    { type: 'fixed', bs: 8 * M, lss: 4096, size: 40 * M + 4096 },
  ] as const;
  for (const c of cases) {
    it(`writes a ${c.type} image with ${c.bs / M} MiB blocks and ${c.lss}-byte sectors that qemu reads back`, async () => {
      const img = join(dir.path, `o-${c.type}-${c.bs}-${c.lss}.vhdx`);
      const raw = `${img}.raw`;
      const ref = await open(raw, 'w+');
      await ref.truncate(c.size);
      const d = await vhdxDriver.create(img, { virtualSize: c.size, type: c.type, blockSize: c.bs, logicalSectorSize: c.lss });
      const r = rng(c.bs + c.lss);
      try {
        for (let i = 0; i < 40; i++) {
          const off = Math.floor(r() * c.size);
          const len = Math.min(c.size - off, 1 + Math.floor(r() * (r() < 0.2 ? 3 * c.bs : 200 * K)));
          if (r() < 0.25) {
            await d.zero(off, len);
            await ref.write(Buffer.alloc(len), 0, len, off);
          } else {
            const data = pattern(Buffer.alloc(len), i);
            await d.write(off, data);
            await ref.write(data, 0, len, off);
          }
          if (i % 10 === 9) await d.flush();
        }
        await d.write(c.size - 100, pattern(Buffer.alloc(100), 99));
        await ref.write(pattern(Buffer.alloc(100), 99), 0, 100, c.size - 100);
      } finally {
        await d.close();
        await ref.close();
      }
      // qemu opens only 512-byte logical sectors ("Operation not supported" otherwise); 4096-byte
      // images are checked by our reader against the raw reference alone.
      if (c.lss === 512) {
        await referee('qemu-img', ['check', '-q', '-f', 'vhdx', img]);
        await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', img, raw]);
      }
      const again = await openVhdx(img, true);
      try {
        expect(await firstDifference(again, raw)).toBe(-1);
        expect((await again.info()).subformat).toBe(c.type);
      } finally {
        await again.close();
      }
    });
  }

  it('uses the valid header and region table when the other is damaged, and repairs the table on a writable open', async () => {
    const img = join(dir.path, 'damaged.vhdx');
    const d = await vhdxDriver.create(img, { virtualSize: 8 * M, blockSize: M });
    await d.write(M, pattern(Buffer.alloc(M), 5));
    await d.close();
    const fh = await open(img, 'r+');
    await fh.write(Buffer.from('xx'), 0, 2, 64 * K + 100); // header 1
    await fh.write(Buffer.from('xx'), 0, 2, 192 * K + 100); // region table 1
    await fh.close();
    await expect(referee('qemu-img', ['check', '-f', 'vhdx', img])).rejects.toThrow();
    const w = await openVhdx(img);
    await w.write(0, Buffer.alloc(4 * K, 1));
    await w.close();
    await referee('qemu-img', ['check', '-q', '-f', 'vhdx', img]);
    expect(await referee('qemu-io', ['-r', '-f', 'vhdx', '-c', 'read -P 1 0 4k', img])).not.toMatch(/fail/i);
  });

  it('refuses to overwrite an existing file and leaves nothing behind on bad parameters', async () => {
    const img = join(dir.path, 'exists.vhdx');
    await (await vhdxDriver.create(img, { virtualSize: 4 * M })).close();
    await expect(vhdxDriver.create(img, { virtualSize: 4 * M })).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(vhdxDriver.create(join(dir.path, 'bad.vhdx'), { virtualSize: 4 * M, blockSize: 3 * M })).rejects.toMatchObject({ code: 'invalid_argument' });
    await expect(open(join(dir.path, 'bad.vhdx'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
