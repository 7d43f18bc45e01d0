/** VHDs against qemu as the referee: what qemu writes we read, what we write qemu reads. */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { referee, scratchDir } from '../../../test/helpers.js';
import { createDisk, openDisk } from '../index.js';
import { compareDisks, convertDisk } from '../ops/index.js';
import { vhdChecksum } from './footer.js';

let dir: Awaited<ReturnType<typeof scratchDir>>;
beforeAll(async () => { dir = await scratchDir('lifeboat-vhd-'); });
afterAll(async () => { await dir.remove(); });

const writes = (size: number) => [
  `write -P 0x5a 0 4096`,
  `write -P 0x5a ${Math.floor(size / 3 / 512) * 512} 1000000`,
  `write -P 0x33 ${size - 1024 - 512} 1024`,
];

describe('VHDs made by qemu-img and written by qemu-io', () => {
  for (const subformat of ['dynamic', 'fixed'] as const) {
    for (const size of ['5M', '10000K', '33M']) {
      it(`reads a ${subformat} ${size} VHD as qemu-img convert -O raw does`, async () => {
        const vhd = join(dir.path, `q-${subformat}-${size}.vhd`);
        const raw = `${vhd}.raw`;
        await referee('qemu-img', ['create', '-f', 'vpc', '-o', `subformat=${subformat}`, vhd, size]);
        const qsize = JSON.parse(await referee('qemu-img', ['info', '--output=json', '-f', 'vpc', vhd]))['virtual-size'] as number;
        for (const c of writes(qsize)) await referee('qemu-io', ['-f', 'vpc', '-c', c, vhd]);
        await referee('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', vhd, raw]);

        const disk = await openDisk(vhd, { readOnly: true });
        expect(disk.format).toBe('vhd');
        expect(disk.virtualSize).toBe(qsize);
        const ours = Buffer.alloc(qsize);
        await disk.read(0, ours);
        expect(ours.equals(await readFile(raw))).toBe(true);
        const info = await disk.info();
        expect(info).toMatchObject({ format: 'vhd', subformat, virtualSize: qsize, blockSize: subformat === 'dynamic' ? 2 * 1024 * 1024 : undefined });
        // Every non-zero byte lies inside a reported extent.
        const covered = Buffer.alloc(qsize);
        for await (const e of disk.extents()) ours.copy(covered, e.offset, e.offset, e.offset + e.length);
        expect(covered.equals(ours)).toBe(true);
        await disk.close();
      });
    }
  }
});

describe('VHDs we write', () => {
  it('writes into a dynamic VHD made by qemu-img, and qemu reads our blocks', async () => {
    const vhd = join(dir.path, 'q-then-ours.vhd');
    await referee('qemu-img', ['create', '-f', 'vpc', '-o', 'subformat=dynamic', vhd, '9M']);
    await referee('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x61 1M 100K', vhd]);
    const d = await openDisk(vhd);
    const ref = Buffer.alloc(d.virtualSize);
    ref.fill(0x61, 1024 * 1024, 1124 * 1024);
    for (const [off, len, byte] of [[1024 * 1024 + 4096, 3000, 0x62], [5 * 1024 * 1024 - 10, 20, 0x63], [d.virtualSize - 512, 512, 0x64]] as const) {
      await d.write(off, Buffer.alloc(len, byte));
      ref.fill(byte, off, off + len);
    }
    await d.close();
    const raw = `${vhd}.raw`;
    await referee('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', vhd, raw]);
    expect((await readFile(raw)).equals(ref)).toBe(true);
  });

  for (const type of ['dynamic', 'fixed'] as const) {
    for (const size of [3 * 1024 * 1024 + 512, 10_240_000, 8 * 1024 * 1024]) {
      it(`converts a ${size}-byte raw disk into a ${type} VHD that qemu reads back identical, size exact`, async () => {
        const src = join(dir.path, `w-${type}-${size}.raw`);
        const out = join(dir.path, `w-${type}-${size}.vhd`);
        const s = await createDisk(src, 'raw', { virtualSize: size });
        await s.write(512, Buffer.alloc(70_000, 0x11));
        await s.write(size - 3000, Buffer.alloc(3000, 0x22));
        await convertDisk(s, out, 'vhd', { type });
        await s.close();
        const info = JSON.parse(await referee('qemu-img', ['info', '--output=json', '-f', 'vpc', out]));
        expect(info['virtual-size']).toBe(size);
        // qemu's vpc driver has no check ("does not support checks"); compare is the referee.
        await referee('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', src, out]);
      });
    }
  }

  it('writes, zeroes and grows a dynamic VHD that qemu still reads identically', async () => {
    const path = join(dir.path, 'edit.vhd');
    const ref = Buffer.alloc(9 * 1024 * 1024);
    const d = await createDisk(path, 'vhd', { virtualSize: 6 * 1024 * 1024 });
    const put = async (off: number, len: number, byte: number) => { await d.write(off, Buffer.alloc(len, byte)); ref.fill(byte, off, off + len); };
    await put(100, 5 * 1024 * 1024, 7);
    await d.zero(2 * 1024 * 1024, 2 * 1024 * 1024);
    ref.fill(0, 2 * 1024 * 1024, 4 * 1024 * 1024);
    await d.zero(1000, 10);
    ref.fill(0, 1000, 1010);
    await d.resize(9 * 1024 * 1024);
    await put(8 * 1024 * 1024, 4096, 9);
    await d.close();
    const raw = join(dir.path, 'edit.raw');
    await referee('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', path, raw]);
    expect((await readFile(raw)).equals(ref)).toBe(true);
    const back = await openDisk(path);
    const other = await openDisk(raw, { readOnly: true });
    expect(await compareDisks(back, other)).toEqual({ identical: true });
    await back.close();
    await other.close();
  });

  it('sizes a disk by its CHS geometry unless its creator states Current Size, as qemu does', async () => {
    const path = join(dir.path, 'creator.vhd');
    const d = await createDisk(path, 'vhd', { virtualSize: 10_240_000, type: 'fixed' });
    await d.close();
    const bytes = await readFile(path);
    const footerAt = bytes.length - 512;
    for (const creator of ['vpc ', 'win ']) {
      bytes.write(creator, footerAt + 28, 'latin1');
      bytes.writeUInt32BE(vhdChecksum(bytes.subarray(footerAt), 64), footerAt + 64);
      await writeFile(path, bytes);
      const qemuSize = JSON.parse(await referee('qemu-img', ['info', '--output=json', '-f', 'vpc', path]))['virtual-size'] as number;
      const ours = await openDisk(path, { readOnly: true });
      expect(ours.virtualSize).toBe(qemuSize);
      expect(qemuSize === 10_240_000).toBe(creator === 'win ');
      await ours.close();
    }
  });
});
