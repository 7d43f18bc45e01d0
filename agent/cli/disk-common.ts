/**
 * What the disk subcommands share: opening an image with errors that name the file, the output
 * format choice, and a progress bar for a terminal.
 */
import { stat } from 'node:fs/promises';
import { extname } from 'node:path';
import { isLifeboatError, LifeboatError, userMessage } from '../../shared/errors.js';
import { openDisk, type DiskFormat, type DiskImage } from '../../shared/disk/index.js';
import type { Progress } from '../../shared/disk/ops/index.js';
import { formatBytes, parseSize } from '../../shared/units.js';

/** Rewrites a user's error so its one line names the file: "<file>: <reason>". Bugs pass through. */
export function naming(file: string, err: unknown): unknown {
  const msg = userMessage(err);
  if (msg === undefined || msg.includes(file)) return err;
  return new LifeboatError(isLifeboatError(err) ? err.code : 'io', `${file}: ${msg}`, { cause: err });
}

/** Runs fn; a user's error it throws comes out naming file. */
export async function about<T>(file: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw naming(file, err);
  }
}

/** Refuses a path that is not an existing regular file, in one line naming it. */
export async function requireFile(file: string): Promise<void> {
  const st = await stat(file).catch(() => undefined);
  if (!st) throw new LifeboatError('not_found', `${file}: no such file`);
  if (!st.isFile()) throw new LifeboatError('invalid_argument', `${file}: not a regular file`);
}

/** Opens an existing image of any format (read-only unless asked), naming the file in any error. */
export function openImage(file: string, options: { readOnly?: boolean } = { readOnly: true }): Promise<DiskImage> {
  return about(file, async () => {
    await requireFile(file);
    return openDisk(file, options);
  });
}

const formats: DiskFormat[] = ['vhdx', 'vhd', 'raw'];

/** --format: vhdx, vhd or raw; undefined picks from the output's extension, else vhdx. */
export function outputFormat(value: string | undefined, file: string): DiskFormat {
  if (value !== undefined) {
    if (!formats.includes(value as DiskFormat)) throw new LifeboatError('invalid_argument', `${file}: unknown format "${value}" (vhdx, vhd or raw)`);
    return value as DiskFormat;
  }
  const ext = extname(file).toLowerCase();
  if (ext === '.vhd') return 'vhd';
  if (ext === '.raw' || ext === '.img') return 'raw';
  return 'vhdx';
}

/** --type: dynamic or fixed. */
export function outputType(value: string | undefined, file: string): 'dynamic' | 'fixed' | undefined {
  if (value === undefined || value === 'dynamic' || value === 'fixed') return value;
  throw new LifeboatError('invalid_argument', `${file}: unknown type "${value}" (dynamic or fixed)`);
}

/** A size option (--size, --block-size), refusing zero and junk. */
export function sizeOption(value: string | undefined, what: string): number | undefined {
  if (value === undefined) return undefined;
  const n = parseSize(value, what);
  if (n <= 0) throw new LifeboatError('invalid_argument', `${what} must be greater than zero`);
  return n;
}

/**
 * A progress bar on stderr when it is a terminal (nothing otherwise), redrawn at most ten times a
 * second. Call end() when done.
 */
export function progressBar(label: string): { update: (p: Progress) => void; end: () => void } {
  const tty = process.stderr.isTTY === true;
  let last = 0;
  let lastDone = -1;
  let drawn = false;
  const draw = (p: Progress) => {
    const frac = p.total === 0 ? 1 : p.done / p.total;
    const width = 30;
    const full = Math.round(frac * width);
    process.stderr.write(`\r${label} [${'#'.repeat(full)}${'.'.repeat(width - full)}] ${(frac * 100).toFixed(0).padStart(3)}% ${formatBytes(p.done)} / ${formatBytes(p.total)}`);
    drawn = true;
  };
  return {
    update(p) {
      if (!tty || p.done === lastDone) return;
      const now = Date.now();
      if (now - last < 100 && p.done < p.total) return;
      last = now;
      lastDone = p.done;
      draw(p);
    },
    end() {
      if (drawn) process.stderr.write('\n');
    },
  };
}
