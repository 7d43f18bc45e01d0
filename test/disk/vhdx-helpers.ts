/** Helpers for the VHDX tests: opening through the driver, and streaming comparisons. */
import { open } from 'node:fs/promises';
import { vhdxDriver } from '../../shared/disk/vhdx/driver.js';
import type { DiskImage } from '../../shared/disk/types.js';
import { seededRandom } from '../../shared/random.js';

/** Opens a VHDX (and its parents, read-only) through the driver alone. */
export function openVhdx(path: string, readOnly = false): Promise<DiskImage> {
  return vhdxDriver.open(path, { readOnly, openParent: (p) => openVhdx(p, true) });
}

const Chunk = 4 << 20;

/** Streams the disk and the raw file side by side; returns the first differing offset or -1. */
export async function firstDifference(disk: DiskImage, rawPath: string): Promise<number> {
  const fh = await open(rawPath, 'r');
  try {
    const { size } = await fh.stat();
    if (size !== disk.virtualSize) return Math.min(size, disk.virtualSize);
    const a = Buffer.alloc(Chunk);
    const b = Buffer.alloc(Chunk);
    for (let off = 0; off < size; off += Chunk) {
      const n = Math.min(Chunk, size - off);
      await disk.read(off, a.subarray(0, n));
      await fh.read(b, 0, n, off);
      if (!a.subarray(0, n).equals(b.subarray(0, n))) {
        for (let i = 0; i < n; i++) if (a[i] !== b[i]) return off + i;
      }
    }
    return -1;
  } finally {
    await fh.close();
  }
}

/** Compares a disk with an in-memory model of its contents; returns the first differing offset or -1. */
export async function firstDifferenceFrom(disk: DiskImage, model: Buffer): Promise<number> {
  if (model.length !== disk.virtualSize) return Math.min(model.length, disk.virtualSize);
  const a = Buffer.alloc(Math.min(Chunk, model.length));
  for (let off = 0; off < model.length; off += Chunk) {
    const n = Math.min(Chunk, model.length - off);
    await disk.read(off, a.subarray(0, n));
    if (!a.subarray(0, n).equals(model.subarray(off, off + n))) {
      for (let i = 0; i < n; i++) if (a[i] !== model[off + i]) return off + i;
    }
  }
  return -1;
}

/** A deterministic pseudo-random generator so failures reproduce. */
export const rng = seededRandom;

/** Fills buf with bytes derived from seed (cheap, distinct per seed and position). */
export function pattern(buf: Buffer, seed: number): Buffer {
  const r = rng(seed);
  for (let i = 0; i + 4 <= buf.length; i += 4) buf.writeUInt32LE((r() * 2 ** 32) >>> 0, i);
  for (let i = buf.length & ~3; i < buf.length; i++) buf[i] = (r() * 256) | 0;
  return buf;
}
