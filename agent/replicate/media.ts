/**
 * External media (`--initial media:DIR`): the sealed chunks of a base and a manifest written to a
 * directory (a USB disk) instead of uploaded; the hoster loads them with `lifeboat-service
 * import-media`. Layout and manifest: docs/formats/agent-media.md. The manifest is rewritten
 * atomically after every chunk, so it always lists exactly the chunks that are complete on the media.
 */
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LifeboatError, wrap } from '../../shared/errors.js';
import { writeJsonAtomic } from '../state/atomic.js';
import type { InflightObject } from '../state/schema.js';

export const MediaManifestVersion = 1;

export interface MediaBase {
  tenant: string;
  vm: string;
  disk: string;
  generation: number;
  mode: 'full' | 'delta';
  chunkCount: number;
  virtualSize: number;
}

export interface MediaManifest extends MediaBase {
  version: number;
  complete: boolean;
  chunks: { index: number; file: string; size: number; sha256: string; createdAt: string }[];
}

const hex16 = (n: number) => n.toString(16).padStart(16, '0');

export class MediaWriter {
  readonly dir: string;
  private manifest: MediaManifest | undefined;
  private queue: Promise<void> = Promise.resolve();

  constructor(root: string, private readonly base: MediaBase) {
    this.dir = join(root, 'lifeboat-media', base.tenant, base.vm, base.disk, hex16(base.generation));
  }

  private async load(): Promise<MediaManifest> {
    if (this.manifest) return this.manifest;
    try {
      this.manifest = JSON.parse(await readFile(join(this.dir, 'manifest.json'), 'utf8')) as MediaManifest;
    } catch {
      this.manifest = { version: MediaManifestVersion, ...this.base, complete: false, chunks: [] };
    }
    return this.manifest;
  }

  /** Writes a sealed chunk onto the media and lists it in the manifest. */
  writeChunk(o: InflightObject, body: Buffer[]): Promise<void> {
    const run = this.queue.then(() => this.media(async () => {
      const manifest = await this.load();
      await mkdir(this.dir, { recursive: true });
      const file = `${hex16(o.number)}.chunk`;
      const tmp = join(this.dir, `.tmp-${file}`);
      try {
        const fh = await open(tmp, 'w', 0o644);
        try {
          await fh.writev(body);
          await fh.sync();
        } finally {
          await fh.close();
        }
        await rename(tmp, join(this.dir, file));
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
      manifest.chunks = manifest.chunks.filter((c) => c.index !== o.number);
      manifest.chunks.push({ index: o.number, file, size: o.size, sha256: o.sha256, createdAt: o.createdAt });
      manifest.chunks.sort((a, b) => a.index - b.index);
      await writeJsonAtomic(join(this.dir, 'manifest.json'), manifest, 0o644);
    }));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Marks the manifest complete: every chunk is on the media. */
  finish(): Promise<void> {
    return this.media(async () => {
      await this.queue;
      const manifest = await this.load();
      manifest.complete = true;
      await mkdir(this.dir, { recursive: true });
      await writeJsonAtomic(join(this.dir, 'manifest.json'), manifest, 0o644);
    });
  }

  private async media(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new LifeboatError('io', `media directory ${this.dir} is full (no space left on device); free space or use a larger disk, then run again`, { cause: err });
      throw wrap(`media directory ${this.dir}`, err);
    }
  }
}
