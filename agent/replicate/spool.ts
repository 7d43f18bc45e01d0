/**
 * Spooling: a sealed object is written to a file (size and SHA-256 computed on the way, fsynced)
 * before anything is uploaded. Uploads need the length up front (presigned PUTs), a commit needs the
 * digest, and a retry after a crash must send the very same bytes (objects are write-once; sealing
 * again would give different bytes under a fresh data key).
 */
import { createHash } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { wrap } from '../../shared/errors.js';

export interface Spooled {
  path: string;
  size: number;
  sha256: string;
}

/** Writes the stream to path (via a temp name, then rename), durable on return; each buffer written is handed to release. */
export async function spool(path: string, stream: AsyncIterable<Buffer>, release?: (written: Buffer) => void): Promise<Spooled> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp`;
  const hash = createHash('sha256');
  let size = 0;
  const fh = await open(tmp, 'w', 0o600);
  try {
    for await (const buf of stream) {
      hash.update(buf);
      size += buf.length;
      await fh.write(buf);
      release?.(buf);
    }
    await fh.sync();
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw wrap(`write ${path}`, err);
  }
  await fh.close();
  await rename(tmp, path);
  return { path, size, sha256: hash.digest('hex') };
}
