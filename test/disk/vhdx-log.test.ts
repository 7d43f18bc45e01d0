/**
 * VHDX log replay: entries our log writer leaves unapplied (as a crash would) are replayed on
 * open, by us (on disk, or in memory when read-only) and by qemu-img; a multi-entry sequence that
 * wraps around the circular log is replayed in order; an entry with a bad CRC is not applied.
 */
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { vhdxDriver } from '../../shared/disk/vhdx/driver.js';
import { newGuid, ZeroGuid } from '../../shared/disk/vhdx/format.js';
import { writeThroughLog } from '../../shared/disk/vhdx/journal.js';
import { buildEntry } from '../../shared/disk/vhdx/log.js';
import { openLayout, type VhdxLayout } from '../../shared/disk/vhdx/open.js';
import { referee, scratchDir } from '../helpers.js';
import { openVhdx } from './vhdx-helpers.js';

const K = 1024;
const M = 1024 * K;

let dir: { path: string; remove: () => Promise<void> };
beforeAll(async () => { dir = await scratchDir('lifeboat-vhdx-log-'); });
afterAll(async () => { await dir.remove(); });

/** A 4 MiB dynamic image whose first block holds 0x11 and whose BAT says so. */
async function imageWithOneBlock(name: string): Promise<{ path: string; blockAt: number }> {
  const path = join(dir.path, name);
  const d = await vhdxDriver.create(path, { virtualSize: 4 * M, blockSize: M });
  await d.write(0, Buffer.alloc(M, 0x11));
  await d.close();
  const l = await openLayout(path, true);
  const blockAt = l.bat.offset(0);
  await l.file.close();
  return { path, blockAt };
}

async function readAll(path: string, readOnly: boolean): Promise<Buffer> {
  const d = await openVhdx(path, readOnly);
  const buf = Buffer.alloc(d.virtualSize);
  await d.read(0, buf);
  await d.close();
  return buf;
}

async function withLayout<T>(path: string, fn: (l: VhdxLayout) => Promise<T>): Promise<T> {
  const l = await openLayout(path, false);
  try {
    return await fn(l);
  } finally {
    await l.file.close();
  }
}

describe('log replay', () => {
  it('replays an unapplied entry: in memory read-only, on disk writable, and as qemu-img does', async () => {
    const { path, blockAt } = await imageWithOneBlock('pending.vhdx');
    await withLayout(path, (l) => writeThroughLog(l.file, l.headers, [
      { at: blockAt + 8 * K, data: Buffer.alloc(8 * K, 0xee) },
      { at: blockAt + 100 * K, data: Buffer.alloc(4 * K, 0xdd) },
    ], { stopBeforeApply: true }));
    const expected = Buffer.alloc(4 * M);
    expected.fill(0x11, 0, M).fill(0xee, 8 * K, 16 * K).fill(0xdd, 100 * K, 104 * K);

    const before = await readFile(path);
    expect((await readAll(path, true)).equals(expected)).toBe(true);
    expect((await readFile(path)).equals(before)).toBe(true);

    const qemuCopy = `${path}.qemu.vhdx`;
    await copyFile(path, qemuCopy);
    await expect(referee('qemu-img', ['check', '-f', 'vhdx', qemuCopy])).rejects.toThrow(/replay/i);
    await referee('qemu-img', ['check', '-q', '-r', 'all', '-f', 'vhdx', qemuCopy]);
    await referee('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', qemuCopy, `${qemuCopy}.raw`]);
    expect((await readFile(`${qemuCopy}.raw`)).equals(expected)).toBe(true);

    expect((await readAll(path, false)).equals(expected)).toBe(true);
    await withLayout(path, async (l) => expect(l.headers.current.logGuid).toBe(ZeroGuid));
    await referee('qemu-img', ['check', '-q', '-f', 'vhdx', path]);
    await referee('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', path, `${path}.raw`]);
    expect((await readFile(`${path}.raw`)).equals(expected)).toBe(true);
  });

  it('replays a wrapping two-entry sequence (data and zero descriptors) from its tail and ignores stale and incomplete entries', async () => {
    const { path, blockAt } = await imageWithOneBlock('wrap.vhdx');
    await withLayout(path, async (l) => {
      const logGuid = newGuid();
      await l.headers.update(l.file, { logGuid });
      const { logOffset, logLength } = l.headers.current;
      const put = async (entry: Buffer, pos: number) => {
        const first = Math.min(entry.length, logLength - pos);
        await l.file.write(entry.subarray(0, first), logOffset + pos);
        if (first < entry.length) await l.file.write(entry.subarray(first), logOffset);
      };
      const fileSize = l.file.size;
      const sector = (b: number) => Buffer.alloc(4 * K, b);
      // Stale entry of an older sequence: valid, lower sequence number, must not win.
      await put(buildEntry([{ at: blockAt, data: sector(0x01) }], { pos: 256 * K, seq: 3n, logGuid, fileSize }), 256 * K);
      // The active sequence: A (seq 7) wraps around the end, B (seq 8) follows it; B's tail is A.
      const aPos = logLength - 8 * K;
      const a = buildEntry([{ at: blockAt, data: sector(0xaa) }, { at: blockAt + 4 * K, data: sector(0xab) }], { pos: aPos, seq: 7n, logGuid, fileSize });
      expect(a.length).toBe(12 * K);
      await put(a, aPos);
      await put(buildEntry([{ at: blockAt + 4 * K, data: sector(0xbb) }], { pos: 4 * K, seq: 8n, logGuid, fileSize, tail: aPos, zeros: [{ at: blockAt + 64 * K, length: 64 * K }] }), 4 * K);
      // A higher sequence number whose tail lies outside its own sequence: incomplete, ignored.
      await put(buildEntry([{ at: blockAt, data: sector(0xcc) }], { pos: 512 * K, seq: 50n, logGuid, fileSize, tail: 600 * K }), 512 * K);
      await l.file.sync();
    });
    const expected = Buffer.alloc(4 * M);
    expected.fill(0x11, 0, M).fill(0xaa, 0, 4 * K).fill(0xbb, 4 * K, 8 * K).fill(0, 64 * K, 128 * K);
    expect((await readAll(path, true)).equals(expected)).toBe(true);
    expect((await readAll(path, false)).equals(expected)).toBe(true);
    await referee('qemu-img', ['check', '-q', '-f', 'vhdx', path]);
  });

  it('does not apply an entry whose CRC fails, and clears the log', async () => {
    const { path, blockAt } = await imageWithOneBlock('badcrc.vhdx');
    const logAt = await withLayout(path, async (l) => {
      await writeThroughLog(l.file, l.headers, [{ at: blockAt, data: Buffer.alloc(4 * K, 0x99) }], { stopBeforeApply: true });
      return l.headers.current.logOffset;
    });
    // Flip one byte of the entry's data sector (after the 4 KiB descriptor sector).
    const { open } = await import('node:fs/promises');
    const fh = await open(path, 'r+');
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, logAt + 4 * K + 100);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, logAt + 4 * K + 100);
    await fh.close();
    const expected = Buffer.alloc(4 * M).fill(0x11, 0, M);
    expect((await readAll(path, true)).equals(expected)).toBe(true);
    expect((await readAll(path, false)).equals(expected)).toBe(true);
    await withLayout(path, async (l) => expect(l.headers.current.logGuid).toBe(ZeroGuid));
    await referee('qemu-img', ['check', '-q', '-f', 'vhdx', path]);
  });

  it('refuses a log whose entry expects a longer file than there is', async () => {
    const { path, blockAt } = await imageWithOneBlock('truncated.vhdx');
    await withLayout(path, async (l) => {
      const logGuid = newGuid();
      await l.headers.update(l.file, { logGuid });
      const entry = buildEntry([{ at: blockAt, data: Buffer.alloc(4 * K, 1) }], { pos: 0, seq: 1n, logGuid, fileSize: l.file.size + 64 * M });
      await l.file.write(entry, l.headers.current.logOffset);
    });
    await expect(openVhdx(path, true)).rejects.toMatchObject({ code: 'corrupt', message: expect.stringMatching(/truncated/) });
  });
});
