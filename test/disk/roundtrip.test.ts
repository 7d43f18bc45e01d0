/** Conversions through every format, refereed by qemu-img: raw → vhdx → vhd → raw keeps the contents. */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDisk, openDisk } from '../../shared/disk/index.js';
import { compareDisks, convertDisk } from '../../shared/disk/ops/index.js';
import type { DiskFormat } from '../../shared/disk/types.js';
import { referee, scratchDir } from '../helpers.js';

let dir: Awaited<ReturnType<typeof scratchDir>>;
beforeAll(async () => { dir = await scratchDir('lifeboat-roundtrip-'); });
afterAll(async () => { await dir.remove(); });

const qemuName: Record<DiskFormat, string> = { raw: 'raw', vhd: 'vpc', vhdx: 'vhdx' };

async function convert(src: string, dst: string, format: DiskFormat, type: 'dynamic' | 'fixed'): Promise<void> {
  const d = await openDisk(src, { readOnly: true });
  try {
    await convertDisk(d, dst, format, { type: format === 'raw' ? undefined : type });
  } finally {
    await d.close();
  }
}

describe('round trips', () => {
  for (const type of ['dynamic', 'fixed'] as const) {
    it(`raw → ${type} vhdx → ${type} vhd → raw, each identical to the source for qemu-img`, async () => {
      const size = 37 * 1024 * 1024 + 512 * 5;
      const src = join(dir.path, `${type}-src.raw`);
      const d = await createDisk(src, 'raw', { virtualSize: size });
      await d.write(0, Buffer.alloc(4096, 1));
      await d.write(3 * 1024 * 1024 - 100, Buffer.alloc(5 * 1024 * 1024, 2));
      await d.write(33 * 1024 * 1024 + 7, Buffer.from('lifeboat'));
      await d.write(size - 512, Buffer.alloc(512, 3));
      await d.close();

      const steps: Array<[DiskFormat, string]> = [['vhdx', `${type}.vhdx`], ['vhd', `${type}.vhd`], ['raw', `${type}-back.raw`]];
      let prev = src;
      for (const [format, name] of steps) {
        const out = join(dir.path, name);
        await convert(prev, out, format, type);
        await referee('qemu-img', ['compare', '-f', 'raw', '-F', qemuName[format], src, out]);
        const info = JSON.parse(await referee('qemu-img', ['info', '--output=json', '-f', qemuName[format], out]));
        expect(info['virtual-size']).toBe(size);
        if (format === 'vhdx') await referee('qemu-img', ['check', '-f', 'vhdx', out]);
        prev = out;
      }
      const [a, b] = await Promise.all([openDisk(src, { readOnly: true }), openDisk(prev, { readOnly: true })]);
      expect(await compareDisks(a!, b!)).toEqual({ identical: true });
      await a!.close();
      await b!.close();
    });
  }
});
