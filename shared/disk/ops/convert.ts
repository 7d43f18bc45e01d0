/**
 * convertDisk and flatten: a new image in any format with the virtual contents of a disk (through
 * its whole parent chain). Unallocated extents and zero data are skipped, so outputs stay sparse
 * or dynamic. A failed conversion removes its partial output; an existing output is never touched.
 */
import { rm, stat } from 'node:fs/promises';
import { LifeboatError } from '../../errors.js';
import { createDisk, openDisk } from '../index.js';
import type { DiskFormat, DiskImage } from '../types.js';
import { copyExtents, type ProgressFn } from './copy.js';

export interface ConvertOptions {
  /** VHD/VHDX subformat of the output (default dynamic). */
  type?: 'dynamic' | 'fixed';
  /** VHD/VHDX block size of the output (the format's default otherwise). */
  blockSize?: number;
  onProgress?: ProgressFn;
}

/** Refuses an output path that exists, before anything is created. */
export async function refuseExisting(path: string): Promise<void> {
  const exists = await stat(path).then(() => true, (err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return false;
    throw err;
  });
  if (exists) throw new LifeboatError('already_exists', `${path}: already exists`);
}

/** Writes the virtual contents of src into a new image at dstPath. */
export async function convertDisk(src: DiskImage, dstPath: string, format: DiskFormat, options: ConvertOptions = {}): Promise<void> {
  await refuseExisting(dstPath);
  let dst: DiskImage | undefined;
  try {
    // Sector formats hold whole sectors: an odd-sized raw source gains zeros up to the next one.
    const sector = format === 'raw' ? 1 : format === 'vhdx' ? src.logicalSectorSize : 512;
    dst = await createDisk(dstPath, format, {
      virtualSize: Math.ceil(src.virtualSize / sector) * sector,
      type: options.type,
      blockSize: options.blockSize,
      ...(format === 'vhdx' ? { logicalSectorSize: src.logicalSectorSize, physicalSectorSize: src.physicalSectorSize } : {}),
    });
    await copyExtents(src, dst, src.extents({ layer: 'chain', scan: false }), { dstIsBlank: true, onProgress: options.onProgress });
    const done = dst;
    dst = undefined;
    await done.close();
  } catch (err) {
    await dst?.close().catch(() => undefined);
    await rm(dstPath, { force: true });
    throw err;
  }
}

/** Writes the image at path, flattened through its parent chain, into one new image at out. */
export async function flatten(path: string, out: string, options: ConvertOptions & { format?: DiskFormat } = {}): Promise<void> {
  const src = await openDisk(path, { readOnly: true });
  try {
    await convertDisk(src, out, options.format ?? src.format, options);
  } finally {
    await src.close();
  }
}
