/**
 * Fresh writes (shared/disk/vhdx/fresh.ts): nothing written is visible until publish, an abandoned
 * writer leaves the image as it was, published data reads back (qemu-img as the referee), and
 * replaced or orphaned blocks are reused by later whole-block writes instead of growing the file.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { vhdxDriver } from '../../shared/disk/vhdx/driver.js';
import { alignedBuffers } from '../../shared/direct-io.js';
import { VhdxFile } from '../../shared/disk/vhdx/file.js';
import type { DiskImage } from '../../shared/disk/types.js';
import { referee, scratchDir } from '../helpers.js';
import { firstDifferenceFrom, openVhdx } from './vhdx-helpers.js';

const MiB = 1 << 20;
const Size = 16 * MiB;
const Block = MiB;
let dir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  const s = await scratchDir('lifeboat-fresh-');
  dir = s.path;
  cleanup = s.remove;
});
afterAll(async () => {
  await cleanup();
});

async function contents(img: DiskImage): Promise<Buffer> {
  const b = Buffer.alloc(img.virtualSize);
  await img.read(0, b);
  return b;
}

/** Offers [offset, offset+length) of model's bytes to the writer block by block as one extent; returns the refused pieces. */
async function offer(img: DiskImage, w: NonNullable<Awaited<ReturnType<NonNullable<DiskImage['freshWrites']>>>>, data: Buffer, offset: number, length: number): Promise<[number, number][]> {
  const refused: [number, number][] = [];
  for (let at = offset; at < offset + length;) {
    const n = Math.min(offset + length - at, Block - (at % Block));
    if (!(await w.write(at, data.subarray(at, at + n), { offset, length }))) refused.push([at, n]);
    at += n;
  }
  return refused;
}

describe('VHDX fresh writes', () => {
  it('are invisible until published, vanish when abandoned, and reuse replaced space', async () => {
    const path = join(dir, 'dyn.vhdx');
    const img = await vhdxDriver.create(path, { virtualSize: Size, blockSize: Block });
    const model = Buffer.alloc(Size);
    const old = randomBytes(4 * MiB);
    await img.write(0, old);
    old.copy(model, 0);
    await img.flush();
    const next = randomBytes(Size);

    // Abandoned: a replaced whole block, a partial write into an unallocated block.
    let w = await img.freshWrites!();
    expect(await offer(img, w, next, Block, Block)).toEqual([]);
    expect(await offer(img, w, next, 8 * MiB + 4096, 3 * 4096)).toEqual([]);
    // A held block written in part cannot take fresh writes.
    expect(await offer(img, w, next, 2 * MiB + 512, 1024)).toEqual([[2 * MiB + 512, 1024]]);
    await w.abandon();
    expect((await contents(img)).equals(model)).toBe(true);

    // Published: the same, and visible after a close and reopen; qemu agrees.
    w = await img.freshWrites!();
    await offer(img, w, next, Block, Block);
    await offer(img, w, next, 8 * MiB + 4096, 3 * 4096);
    await offer(img, w, next, 10 * MiB, 3 * MiB + 7);
    await w.publish();
    next.copy(model, Block, Block, 2 * Block);
    next.copy(model, 8 * MiB + 4096, 8 * MiB + 4096, 8 * MiB + 4 * 4096);
    next.copy(model, 10 * MiB, 10 * MiB, 13 * MiB + 7);
    expect((await contents(img)).equals(model)).toBe(true);
    await img.close();
    const raw = join(dir, 'dyn.raw');
    await writeFile(raw, model);
    await referee('qemu-img', ['check', '-q', '-f', 'vhdx', path]);
    await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', path, raw]);

    // Reopened: the replaced block and the abandoned ones are free space; whole blocks reuse it.
    const sizeBefore = (await stat(path)).size;
    const again = await openVhdx(path);
    const more = randomBytes(4 * MiB);
    w = await again.freshWrites!();
    expect(await offer(again, w, more, 0, 3 * MiB)).toEqual([]);
    await w.publish();
    more.copy(model, 0, 0, 3 * MiB);
    await again.close();
    expect((await stat(path)).size).toBe(sizeBefore);
    const check = await openVhdx(path, true);
    expect(await firstDifferenceFrom(check, model)).toBe(-1);
    await check.close();
    await writeFile(raw, model);
    await referee('qemu-img', ['check', '-q', '-f', 'vhdx', path]);
    await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', path, raw]);
  });

  it('write unaligned pieces and gaps exactly (page-aligned parts through O_DIRECT, edges buffered)', async () => {
    const path = join(dir, 'unaligned.vhdx');
    const img = await vhdxDriver.create(path, { virtualSize: Size, blockSize: Block });
    const model = Buffer.alloc(Size);
    const next = randomBytes(Size);
    const w = await img.freshWrites!();
    // Extents at odd offsets and lengths, some a few bytes apart in one page, one spanning many blocks.
    const extents: [number, number][] = [[7, 100], [109, 4000], [4200, 5 * 4096 + 3], [MiB - 5, 10], [2 * MiB + 4095, 2 * MiB + 2], [6 * MiB, 9 * MiB + 1]];
    for (const [offset, length] of extents) {
      expect(await offer(img, w, next, offset, length)).toEqual([]);
      next.copy(model, offset, offset, offset + length);
    }
    await w.publish();
    await img.flush();
    expect((await contents(img)).equals(model)).toBe(true);
    await img.close();
    const raw = join(dir, 'unaligned.raw');
    await writeFile(raw, model);
    await referee('qemu-img', ['check', '-q', '-f', 'vhdx', path]);
    await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', path, raw]);
  });

  it('go through O_DIRECT from aligned memory where the filesystem takes it, else the ordinary way', async () => {
    const path = join(dir, 'through.bin');
    await writeFile(path, Buffer.alloc(0));
    const supported = await open(path, constants.O_WRONLY | constants.O_DIRECT).then(async (fh) => { await fh.close(); return true; }, () => false);
    const file = await VhdxFile.open(path, false);
    const [buf] = alignedBuffers(1, 64 * 1024)!;
    randomBytes(buf!.length).copy(buf!);
    expect(await file.writeThrough(buf!.subarray(0, 8192), 4096)).toBe(supported);
    // Unaligned offsets are never tried; refused memory turns write-through off for the file.
    expect(await file.writeThrough(buf!.subarray(0, 8192), 100)).toBe(false);
    // Malloc'd memory: at most one of two offsets 16 bytes apart can be 512-byte aligned by chance.
    const plain = Buffer.allocUnsafeSlow(64 * 1024 + 64);
    const refused = [await file.writeThrough(plain.subarray(16, 16 + 4096), 16384), await file.writeThrough(plain.subarray(32, 32 + 4096), 20480)];
    if (supported) expect(refused).toContain(false);
    expect(await file.writeThrough(buf!.subarray(0, 4096), 65536)).toBe(false);
    await file.close();
    const got = await readFile(path);
    if (supported) expect(got.subarray(4096, 12288).equals(buf!.subarray(0, 8192))).toBe(true);
  });

  it('on a differencing disk take only blocks written whole', async () => {
    const parentPath = join(dir, 'parent.vhdx');
    const parent = await vhdxDriver.create(parentPath, { virtualSize: Size, blockSize: Block });
    const model = randomBytes(Size);
    await parent.write(0, model);
    await parent.close();
    const childPath = join(dir, 'child.vhdx');
    const child = await vhdxDriver.createChild!(childPath, { parentPath, openParent: (p) => openVhdx(p, true) });
    const next = randomBytes(Size);
    const w = await child.freshWrites!();
    expect(await offer(child, w, next, 3 * MiB + 4096, 4096)).toEqual([[3 * MiB + 4096, 4096]]);
    expect(await offer(child, w, next, 5 * MiB, 2 * MiB)).toEqual([]);
    expect((await contents(child)).equals(model)).toBe(true);
    await w.publish();
    next.copy(model, 5 * MiB, 5 * MiB, 7 * MiB);
    expect((await contents(child)).equals(model)).toBe(true);
    await child.close();
    // qemu does not open differencing VHDX: read the reopened chain back instead.
    const reopened = await openVhdx(childPath, true);
    expect(await firstDifferenceFrom(reopened, model)).toBe(-1);
    await reopened.close();
  });

  it('leave zeros unwritten in new space and write them over reused space', async () => {
    const path = join(dir, 'zeros.vhdx');
    const img = await vhdxDriver.create(path, { virtualSize: Size, blockSize: Block });
    const model = Buffer.alloc(Size);
    const old = randomBytes(4 * MiB);
    await img.write(0, old);
    old.copy(model, 0);
    await img.close();
    // Blocks 0-3 replaced whole: their old space (random bytes) is free for reuse once reopened.
    let again = await openVhdx(path);
    let w = await again.freshWrites!();
    const next = randomBytes(Size);
    expect(await offer(again, w, next, 0, 4 * MiB)).toEqual([]);
    await w.publish();
    next.copy(model, 0, 0, 4 * MiB);
    await again.close();
    const allocatedBefore = await allocated(path);
    // Mostly zeros: a page at the end of block 1 and one in block 10, offered a block at a time.
    // Blocks 0-1 and 8-9 reuse the freed space, so their zeros must be written; 10-11 are new space.
    const mixed = Buffer.alloc(Size);
    randomBytes(4096).copy(mixed, 2 * MiB - 4096);
    randomBytes(4096).copy(mixed, 10 * MiB + 12345);
    again = await openVhdx(path);
    w = await again.freshWrites!();
    expect(await offer(again, w, mixed, 0, 2 * MiB)).toEqual([]);
    expect(await offer(again, w, mixed, 8 * MiB, 4 * MiB)).toEqual([]);
    await w.publish();
    await again.close();
    mixed.copy(model, 0, 0, 2 * MiB);
    mixed.copy(model, 8 * MiB, 8 * MiB, 12 * MiB);
    const check = await openVhdx(path, true);
    expect(await firstDifferenceFrom(check, model)).toBe(-1);
    await check.close();
    const raw = join(dir, 'zeros.raw');
    await writeFile(raw, model);
    await referee('qemu-img', ['check', '-q', '-f', 'vhdx', path]);
    await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', path, raw]);
    // Two new blocks appended: block 10's piece holds data and is written whole, block 11's is all
    // zeros and is not written at all (written, the file would hold 2 MiB more).
    const growth = await allocated(path) - allocatedBefore;
    expect(growth).toBeGreaterThanOrEqual(MiB);
    expect(growth).toBeLessThan(MiB + 256 * 1024);
  });
});

async function allocated(path: string): Promise<number> {
  const f = await VhdxFile.open(path, true);
  try {
    return await f.allocatedBytes();
  } finally {
    await f.close();
  }
}
