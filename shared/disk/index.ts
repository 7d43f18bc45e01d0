/**
 * The disk registry: opens any image by its content (never its file name), creates new ones, and
 * opens the parents of differencing disks. Format modules never import this file; it hands them
 * openParent instead.
 */
import { open as openFile } from 'node:fs/promises';
import { ErrInvalidArgument, ErrUnsupported, wrap } from '../errors.js';
import type { CreateOptions, DiskFormat, DiskFormatDriver, DiskImage, OpenOptions } from './types.js';
import { rawDriver } from './raw.js';
import { vhdDriver } from './vhd/driver.js';
import { vhdxDriver } from './vhdx/driver.js';

export type * from './types.js';

/** Probe order matters: raw matches anything, so it comes last. */
const drivers: DiskFormatDriver[] = [vhdxDriver, vhdDriver, rawDriver];

export const ProbeHeadBytes = 64 * 1024;

/** Names the format of the image at path from its first and last bytes. */
export async function detectFormat(path: string): Promise<DiskFormat> {
  const fh = await openFile(path, 'r');
  try {
    const { size } = await fh.stat();
    const head = Buffer.alloc(Math.min(ProbeHeadBytes, size));
    await fh.read(head, 0, head.length, 0);
    const tail = Buffer.alloc(Math.min(512, size));
    await fh.read(tail, 0, tail.length, size - tail.length);
    const driver = drivers.find((d) => d.probe(head, tail, size));
    if (!driver) throw ErrUnsupported(`${path}: unknown disk image format`);
    return driver.format;
  } finally {
    await fh.close();
  }
}

function driverFor(format: DiskFormat): DiskFormatDriver {
  const d = drivers.find((x) => x.format === format);
  if (!d) throw ErrInvalidArgument(`unknown disk format "${format}" (raw, vhd or vhdx)`);
  return d;
}

/** Opens the image at path, whatever its format, with its parents (read-only) when it has any. */
export async function openDisk(path: string, options: Omit<OpenOptions, 'openParent'> = {}): Promise<DiskImage> {
  try {
    const format = await detectFormat(path);
    return await driverFor(format).open(path, { ...options, openParent: openParentDisk });
  } catch (err) {
    throw wrap(`open ${path}`, err);
  }
}

function openParentDisk(path: string): Promise<DiskImage> {
  return openDisk(path, { readOnly: true });
}

/** Creates a new image; refuses to overwrite an existing file. */
export async function createDisk(path: string, format: DiskFormat, options: CreateOptions): Promise<DiskImage> {
  try {
    return await driverFor(format).create(path, options);
  } catch (err) {
    throw wrap(`create ${path}`, err);
  }
}

/** Creates a differencing child of parentPath in the parent's format (VHDX). */
export async function createChildDisk(path: string, parentPath: string, options: { blockSize?: number } = {}): Promise<DiskImage> {
  try {
    const format = await detectFormat(parentPath);
    const driver = driverFor(format);
    if (!driver.createChild) throw ErrUnsupported(`${format} has no differencing disks; use a vhdx parent`);
    return await driver.createChild(path, { ...options, parentPath, openParent: openParentDisk });
  } catch (err) {
    throw wrap(`create ${path}`, err);
  }
}
