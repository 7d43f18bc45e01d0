/**
 * Atomic state files: a reader sees the old contents or the new, never a mix, even when the writer is
 * killed or the machine loses power. Write a temp file beside the target, fsync it, rename it over the
 * target, fsync the directory so the rename itself is durable.
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ErrCorrupt, wrap } from '../../shared/errors.js';

/** Temp files start with this so a crashed writer's leftovers can be recognised and removed. */
export const TempPrefix = '.tmp-';

/** Replaces path with data atomically and durably; mode applies to the new file (default 0600). */
export async function writeFileAtomic(path: string, data: Uint8Array | string, mode = 0o600): Promise<void> {
  const tmp = join(dirname(path), `${TempPrefix}${basename(path)}-${randomBytes(6).toString('hex')}`);
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw wrap(`write ${path}`, err);
  }
  await syncDir(dirname(path));
}

/** Makes a completed rename or unlink in dir durable. Windows cannot open directories; NTFS journals renames. */
export async function syncDir(dir: string): Promise<void> {
  if (process.platform === 'win32') return;
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Reads a JSON state file; undefined when it does not exist, a clear 'corrupt' error when it is not JSON. */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw wrap(`read ${path}`, err);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw ErrCorrupt(`${path}: state file is not valid JSON (${(err as Error).message}); fix or remove it by hand, the agent will not reset it`, err);
  }
}

/** Writes value as pretty JSON, atomically. */
export function writeJsonAtomic(path: string, value: unknown, mode = 0o600): Promise<void> {
  return writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`, mode);
}
