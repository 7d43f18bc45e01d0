/**
 * Reads a chunk of a disk, digests its blocks for the tracker's map, selects the extents of the base
 * (non-zero blocks, or blocks differing from the replica's digests) and seals them as a base log.
 * Runs on a sealing thread (seal-worker.ts) or, with no threads, in the calling one.
 */
import { createHash } from 'node:crypto';
import type { PublicJwk } from '../../shared/crypto/keys.js';
import type { DiskImage } from '../../shared/disk/index.js';
import { openSourceDisk } from '../../shared/qemu/nbd-disk.js';
import type { LogHeaderInit } from '../../shared/log/index.js';
import { writeLog } from '../../shared/log/index.js';
import { DefaultFrameSize, FixedHeaderBytes, MaxJweBytes, TagBytes } from '../../shared/crypto/format.js';
import type { Extent } from '../../shared/disk/types.js';
import type { Range } from '../../shared/disk/sparse.js';
import { DefaultChunkShift, MaxHeaderBytes } from '../../shared/log/header.js';
import { ChunkHeaderBytes, DigestBytes, ExtentRecordBytes, TrailerCountsBytes } from '../../shared/log/records.js';
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
   * The chunk's data ranges from the disk's metadata (dataRangesOf), asked by the main thread: a
   * raw file's holes can be asked there only (shared/disk/sparse.ts). Absent: the sealer asks the disk.
   */
  ranges?: Range[];
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

/**
 * Room in an output buffer beyond the chunk's plaintext: the chunk is read into the buffer at this
 * offset and sealed into it from the start (see sealChunk), so this must exceed what sealing adds to
 * the bytes read (envelope and log headers, records, frame tags: a few KiB).
 */
export const SealSlack = 256 * 1024;

/**
 * What a sealer keeps between jobs: its open disks and the output buffers of chunks already shipped
 * (recycled: a fresh large buffer per chunk is slow, and dead ones pile up between collections).
 */
export class SealerState {
  private readonly disks = new Map<string, Promise<DiskImage>>();
  private readonly outputs: ArrayBuffer[] = [];

  disk(path: string): Promise<DiskImage> {
    let d = this.disks.get(path);
    if (!d) {
      d = openSourceDisk(path); // a file, or a live source's view by its NBD URI
      this.disks.set(path, d);
    }
    return d;
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

/**
 * At most how many bytes a sealed base log holds beyond the data bytes of its extents (each data
 * chunk is stored at most at its raw size): the envelope's header (fixed part, the log header as
 * context, the JWE), a record per extent, a chunk header per log chunk, a tag per frame, the trailer.
 */
export function sealingAdds(extents: readonly Extent[], length: number, logChunk = 2 ** DefaultChunkShift, frameSize = DefaultFrameSize): number {
  const chunks = extents.reduce((n, e) => n + (e.kind === 'data' ? Math.ceil(e.length / logChunk) : 0), 0);
  const framing = MaxHeaderBytes + extents.length * ExtentRecordBytes + chunks * ChunkHeaderBytes + TrailerCountsBytes + DigestBytes;
  const frames = Math.ceil((length + framing) / frameSize) + 1;
  return FixedHeaderBytes + MaxHeaderBytes + MaxJweBytes + framing + frames * TagBytes;
}

/**
 * Reads, digests and seals one chunk in one buffer: the output (the job's shared slot, or one of the
 * state's) holds the chunk's bytes at SealSlack, and the sealed body is written from its start. The
 * log writer reads extents in ascending order and a sealed byte never runs more than a few KiB ahead
 * of the bytes read, so the body overwrites only bytes already read; a body that would catch up
 * with unread bytes moves to a buffer of its own first. No read buffer is needed beside the output.
 */
export async function sealChunk(job: SealJob, state: SealerState, slack = SealSlack): Promise<Sealed> {
  const disk = await state.disk(job.diskPath);
  const out = Buffer.from(job.into && job.into.byteLength >= job.length + slack ? job.into : state.output(job.length + slack));
  const contents = await readChunk(disk, job.start, job.length, out.subarray(slack, slack + job.length), BigInt(job.seed), job.ranges);
  return sealRead(job, contents, out, slack);
}

async function sealRead(job: SealJob, contents: ChunkContents, out: Buffer, slack: number): Promise<Sealed> {
  const extents = job.remote ? differingExtents(contents, job.start, new Map(job.remote)) : nonZeroExtents(contents, job.start);
  // Bytes of the chunk read so far: those below never are again, their room may take the body.
  let readEnd = 0;
  // Sealed straight into `out` when what sealing adds to the bytes read is sure to stay within the
  // slack: then a byte of the body is written only where the chunk's bytes were already read.
  const direct = sealingAdds(extents, job.length, job.header.chunkSize) <= slack;
  const { sealed, release } = writeLog(job.header, {
    extents,
    read: async (offset, buf) => {
      const from = offset - job.start;
      contents.data.copy(buf, 0, from, from + buf.length);
      readEnd = Math.max(readEnd, from + buf.length);
    },
    // Compressed logs read the chunk where it lies; the writer is done with a view before it yields.
    view: (offset, length) => {
      const from = offset - job.start;
      readEnd = Math.max(readEnd, from + length);
      return contents.data.subarray(from, from + length);
    },
  }, { recipient: job.recipient, into: direct ? out : undefined });
  let body = out;
  let limit = slack; // where unread bytes start, while the body shares the buffer with them
  const hash = createHash('sha256');
  let size = 0;
  for await (const b of sealed) {
    if (b.buffer === body.buffer && b.byteOffset === body.byteOffset + size) {
      // Sealed where it lies (writeLog's `into`).
      size += b.length;
      hash.update(b);
      continue;
    }
    if (body === out) limit = slack + readEnd;
    if (size + b.length > (body === out ? limit : body.length)) {
      const bigger = Buffer.allocUnsafeSlow(2 * (size + b.length) + job.length);
      body.copy(bigger, 0, 0, size);
      body = bigger;
    }
    size += b.copy(body, size);
    hash.update(b);
    release(b);
  }
  return { body: body.subarray(0, size), size, sha256: hash.digest('hex'), digests: contents.digests };
}
