/**
 * convertDisk and flatten: a new image in any format with the virtual contents of a disk (through
 * its whole parent chain). Unallocated extents and zero data are skipped, so outputs stay sparse
 * or dynamic. The image is written under a temporary name beside the output and linked to the
 * output's name only when whole, so no partial image ever carries that name (a killed process
 * leaves at most the temporary file, which names itself as such); an existing output is never
 * touched. Outputs are 0600: they hold a tenant's disk.
 */
import { randomBytes } from 'node:crypto';
import { chmod, link, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
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

/** Mode of every image convertDisk writes: a tenant's disk is for its owner alone. */
export const OutputMode = 0o600;

/** The temporary name an image bound for dstPath is written under, in the same directory (a rename, not a copy). */
export function partialPathFor(dstPath: string, token: string = `${process.pid}`): string {
  return join(dirname(dstPath), `.${basename(dstPath)}.partial-${token}`);
}

/** Refuses an output whose directory is missing, naming the directory rather than a file inside it. */
export async function checkOutputDir(dstPath: string): Promise<void> {
  const dir = dirname(dstPath);
  const isDir = await stat(dir).then((s) => s.isDirectory(), (err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return false;
    throw err;
  });
  if (!isDir) throw new LifeboatError('not_found', `${dstPath}: folder ${dir} does not exist`);
}

/** Writes the virtual contents of src into a new image at dstPath. */
export async function convertDisk(src: DiskImage, dstPath: string, format: DiskFormat, options: ConvertOptions = {}): Promise<void> {
  await refuseExisting(dstPath);
  await checkOutputDir(dstPath);
  const partial = partialPathFor(dstPath, `${process.pid}-${randomBytes(4).toString('hex')}`);
  let dst: DiskImage | undefined;
  try {
    // Sector formats hold whole sectors: an odd-sized raw source gains zeros up to the next one.
    const sector = format === 'raw' ? 1 : format === 'vhdx' ? src.logicalSectorSize : 512;
    dst = await createDisk(partial, format, {
      virtualSize: Math.ceil(src.virtualSize / sector) * sector,
      type: options.type,
      blockSize: options.blockSize,
      ...(format === 'vhdx' ? { logicalSectorSize: src.logicalSectorSize, physicalSectorSize: src.physicalSectorSize } : {}),
    });
    await chmod(partial, OutputMode);
    await copyExtents(src, dst, src.extents({ layer: 'chain', scan: false }), { dstIsBlank: true, onProgress: options.onProgress });
    const done = dst;
    dst = undefined;
    await done.close();
    // link, not rename: an output that appeared meanwhile is refused, never replaced.
    await link(partial, dstPath).catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'EEXIST' ? new LifeboatError('already_exists', `${dstPath}: already exists`) : err;
    });
  } catch (err) {
    await dst?.close().catch(() => undefined);
    throw err;
  } finally {
    await rm(partial, { force: true });
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
