/**
 * Reads a chunk of a disk, digests its blocks for the tracker's map, selects the extents of the base
 * (non-zero blocks, or blocks differing from the replica's digests) and seals them as a base log.
 * Runs on a sealing thread (seal-worker.ts) or, with no threads, in the calling one.
 */
import { createHash } from 'node:crypto';
import type { PublicJwk } from '../../shared/crypto/keys.js';
import type { DiskImage } from '../../shared/disk/index.js';
import { openDisk } from '../../shared/disk/index.js';
import type { LogHeaderInit } from '../../shared/log/index.js';
import { writeLog } from '../../shared/log/index.js';
import { differingExtents, nonZeroExtents, readChunk } from './chunk.js';
import type { ChunkContents } from './chunk.js';

export interface SealJob {
  diskPath: string;
  start: number;
  length: number;
  /** The map seed, as a decimal string (bigints do not cross threads). */
  seed: string;
  /** The replica's digests of 1 MiB blocks for a delta base (index, sha256); absent for a full one. */
  remote?: [number, string][];
  header: LogHeaderInit;
  recipient: PublicJwk;
  /**
   * Memory for the sealed body, shared with the thread that uploads it (SealPool's slots): a body
   * that fits is sealed into it and nothing moves between threads. Without it (or when it is too
   * small) the body gets memory of its own.
   */
  into?: SharedArrayBuffer;
}

/** A sealed chunk: its bytes (one buffer, exactly size long, with memory of its own), digest, map digests. */
export interface Sealed { body: Buffer; size: number; sha256: string; digests: Uint32Array }

/** Output buffers a sealer keeps for reuse: one per chunk it can have in flight. */
const KeptOutputs = 3;

/** Room for a sealed chunk beyond its plaintext: headers, records, frame tags (it grows if ever short). */
export const SealSlack = 256 * 1024;

/**
 * What a sealer keeps between jobs: its open disks, its read buffers (one per job running) and the
 * output buffers of chunks already shipped (recycled: a fresh large buffer per chunk is slow, and dead
 * ones pile up between collections).
 */
export class SealerState {
  private readonly disks = new Map<string, Promise<DiskImage>>();
  private readonly free: Buffer[] = [];
  private readonly outputs: ArrayBuffer[] = [];

  disk(path: string): Promise<DiskImage> {
    let d = this.disks.get(path);
    if (!d) {
      d = openDisk(path, { readOnly: true });
      this.disks.set(path, d);
    }
    return d;
  }

  acquire(length: number): Buffer {
    const buf = this.free.pop();
    return buf && buf.length >= length ? buf : Buffer.allocUnsafe(length);
  }

  release(buf: Buffer): void {
    this.free.push(buf);
  }

  /** An output buffer of at least length bytes, with memory of its own. */
  output(length: number): ArrayBuffer {
    const b = this.outputs.pop();
    // Not zero-filled (new ArrayBuffer would be): every byte handed out is written first.
    return b && b.byteLength >= length ? b : Buffer.allocUnsafeSlow(length).buffer as ArrayBuffer;
  }

  /** Takes back the memory of a shipped chunk's body (its owner no longer reads it). */
  recycle(buf: ArrayBuffer): void {
    if (this.outputs.length < KeptOutputs) this.outputs.push(buf);
  }

  async close(): Promise<void> {
    await Promise.all([...this.disks.values()].map(async (d) => (await d).close()));
    this.disks.clear();
  }
}

export async function sealChunk(job: SealJob, state: SealerState): Promise<Sealed> {
  const disk = await state.disk(job.diskPath);
  const buf = state.acquire(job.length);
  try {
    return await sealRead(job, await readChunk(disk, job.start, job.length, buf, BigInt(job.seed)), state);
  } finally {
    state.release(buf);
  }
}

async function sealRead(job: SealJob, contents: ChunkContents, state: SealerState): Promise<Sealed> {
  const extents = job.remote ? differingExtents(contents, job.start, new Map(job.remote)) : nonZeroExtents(contents, job.start);
  const { sealed } = writeLog(job.header, {
    extents,
    read: async (offset, out) => { contents.data.copy(out, 0, offset - job.start, offset - job.start + out.length); },
  }, { recipient: job.recipient });
  // Copied as it comes into one buffer of its own, which a sealing thread hands over without copying.
  let body = job.into ? Buffer.from(job.into) : Buffer.from(state.output(job.length + SealSlack));
  const hash = createHash('sha256');
  let size = 0;
  for await (const b of sealed) {
    if (size + b.length > body.length) {
      const bigger = Buffer.allocUnsafeSlow(2 * (size + b.length));
      body.copy(bigger, 0, 0, size);
      body = bigger;
    }
    size += b.copy(body, size);
    hash.update(b);
  }
  return { body: body.subarray(0, size), size, sha256: hash.digest('hex'), digests: contents.digests };
}
