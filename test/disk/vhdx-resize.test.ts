/**
 * Growing VHDX disks: within the BAT region, and past it (the BAT moves to the end of the file
 * and both region tables change through the log), checked by qemu-img and qemu-io.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { vhdxDriver } from '../../shared/disk/vhdx/driver.js';
import { openLayout } from '../../shared/disk/vhdx/open.js';
import { referee, scratchDir } from '../helpers.js';
import { openVhdx } from './vhdx-helpers.js';

const K = 1024;
const M = 1024 * K;
const G = 1024 * M;

let dir: { path: string; remove: () => Promise<void> };
beforeAll(async () => { dir = await scratchDir('lifeboat-vhdx-resize-'); });
afterAll(async () => { await dir.remove(); });

async function qemuReads(path: string, checks: [number, number, number][]): Promise<string> {
  return referee('qemu-io', ['-r', '-f', 'vhdx', ...checks.flatMap(([p, o, l]) => ['-c', `read -P ${p} ${o} ${l}`]), path]);
}

describe('resize', () => {
  it('grows past the BAT region: the BAT moves and qemu reads old and new data', async () => {
    const path = join(dir.path, 'grow-far.vhdx');
    const d = await vhdxDriver.create(path, { virtualSize: G, blockSize: M });
    await d.write(0, Buffer.alloc(4 * K, 0xaa));
    await d.write(G - 4 * K, Buffer.alloc(4 * K, 0xab));
    const before = await openLayout(path, true);
    const oldBat = before.regions.bat.fileOffset;
    await before.file.close();
    await d.resize(200 * G);
    await d.write(150 * G, Buffer.alloc(4 * K, 0xbb));
    await d.close();

    const after = await openLayout(path, true);
    expect(after.regions.bat.fileOffset).not.toBe(oldBat);
    expect(after.meta.virtualSize).toBe(200 * G);
    await after.file.close();
    await referee('qemu-img', ['check', '-q', '-f', 'vhdx', path]);
    const info = JSON.parse(await referee('qemu-img', ['info', '--output=json', '-f', 'vhdx', path])) as { 'virtual-size': number };
    expect(info['virtual-size']).toBe(200 * G);
    const out = await qemuReads(path, [[0xaa, 0, 4 * K], [0xab, G - 4 * K, 4 * K], [0xbb, 150 * G, 4 * K], [0, 2 * G, 64 * K], [0, 200 * G - 4 * K, 4 * K]]);
    expect(out).not.toMatch(/fail/i);
  });

  it('grows within the BAT region, zeroing the old tail of a partial last block', async () => {
    const path = join(dir.path, 'grow-near.vhdx');
    const size = 3 * M + 512;
    const d = await vhdxDriver.create(path, { virtualSize: size, blockSize: M });
    await d.write(size - 512, Buffer.alloc(512, 0xcc));
    await d.resize(5 * M);
    await d.close();
    await referee('qemu-img', ['check', '-q', '-f', 'vhdx', path]);
    expect(await qemuReads(path, [[0xcc, size - 512, 512], [0, size, 5 * M - size]])).not.toMatch(/fail/i);
    const again = await openVhdx(path);
    await expect(again.resize(4 * M)).rejects.toMatchObject({ code: 'invalid_argument' });
    await expect(again.resize(5 * M + 100)).rejects.toMatchObject({ code: 'invalid_argument' });
    await again.close();
  });
});
