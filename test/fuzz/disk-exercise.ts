/**
 * What the disk fuzz targets do with each mutated image: open it through openDisk as any outside file
 * is opened, read it, list its extents, ask for its info, and when writable write, zero, flush, close
 * and open it again. Each step either works or throws a LifeboatError; the extents must stay inside
 * the disk, ascending and apart.
 */
import { mkdtemp, open, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { openDisk } from '../../shared/disk/index.js';
import type { DiskImage } from '../../shared/disk/types.js';
import { expectClean } from './harness.js';

const MiB = 2 ** 20;
/** Bytes read from each image (and the range its extents are listed over). */
const ReadBytes = 4 * MiB;
const ExtentRange = 256 * MiB;

/** A scratch directory in memory when there is one (the fuzz targets fsync a lot), else in tmp. */
export async function fuzzScratch(prefix: string): Promise<{ path: string; remove: () => Promise<void> }> {
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const path = await mkdtemp(join(base, prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/**
 * The file an input is written to, reused from input to input: only the 64 KiB pieces that differ from
 * what it holds are written (rewriting a whole image per input costs more than parsing it). After a
 * writable open its contents are unknown, and the next input is written whole.
 */
export class WorkFile {
  private held: Buffer | undefined;

  constructor(readonly path: string) {}

  async put(bytes: Buffer): Promise<void> {
    const fh = await open(this.path, this.held === undefined ? 'w' : 'r+');
    try {
      const before = this.held;
      for (let at = 0; at < bytes.length; at += Piece) {
        const piece = bytes.subarray(at, at + Piece);
        if (before && piece.equals(before.subarray(at, at + Piece))) continue;
        for (let done = 0; done < piece.length;) done += (await fh.write(piece, done, piece.length - done, at + done)).bytesWritten;
      }
      if (before === undefined || before.length !== bytes.length) await fh.truncate(bytes.length);
    } finally {
      await fh.close();
    }
    this.held = bytes;
  }

  /** The file was changed by something else (a writable open): write the next input whole. */
  forget(): void {
    this.held = undefined;
  }
}
const Piece = 64 * 1024;

/** Puts bytes in the work file and exercises the image there. */
export async function exerciseBytes(work: WorkFile, bytes: Buffer, writable: boolean): Promise<void> {
  await work.put(bytes);
  if (writable) work.forget();
  await exerciseDisk(work.path, writable);
}

/** Opens, reads, lists and (writable) changes the image at path; anything but a LifeboatError fails. */
export async function exerciseDisk(path: string, writable: boolean): Promise<void> {
  let disk: DiskImage;
  try {
    disk = await openDisk(path, { readOnly: !writable });
  } catch (err) {
    expectClean(err);
    return;
  }
  let closed = false;
  try {
    await readAndList(disk);
    if (writable) {
      await disk.write(0, Buffer.alloc(4096, 0x5a));
      if (disk.virtualSize > 3 * MiB) await disk.write(3 * MiB - 512, Buffer.alloc(8192, 0xa5));
      await disk.zero(Math.min(disk.virtualSize - 512, MiB), 512);
      await disk.flush();
      closed = true;
      await disk.close();
      const again = await openDisk(path, { readOnly: true });
      try {
        await readAndList(again);
      } finally {
        await again.close();
      }
    }
  } catch (err) {
    expectClean(err);
  } finally {
    if (!closed) await disk.close().catch(expectClean);
  }
}

async function readAndList(disk: DiskImage): Promise<void> {
  const size = disk.virtualSize;
  const head = Buffer.alloc(Math.min(size, ReadBytes));
  await disk.read(0, head);
  if (size >= 512) await disk.read(size - 512, Buffer.alloc(512));
  for (const layer of ['chain', 'own'] as const) {
    let end = 0;
    for await (const e of disk.extents({ offset: 0, length: Math.min(size, ExtentRange), layer })) {
      expect(e.length).toBeGreaterThan(0);
      expect(e.offset).toBeGreaterThanOrEqual(end);
      end = e.offset + e.length;
      expect(end).toBeLessThanOrEqual(size);
    }
  }
  await disk.info();
}
