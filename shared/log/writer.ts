/**
 * Writing a change log: header, extents read chunk by chunk from the source, trailer
 * (docs/formats/hrl.md, "Writer"). Memory is a few chunks whatever the log's size: raw bytes go
 * through one reused read buffer and one compression buffer (uncompressed logs read straight into the
 * output blocks); output is packed into fresh or recycled blocks.
 */
import type { Extent } from '../disk/types.js';
import { ErrInvalidArgument } from '../errors.js';
import { copyInto } from '../crypto/seal.js';
import { ChunkCompressor, CodecStored, DefaultZstdLevel } from './codec.js';
import { DefaultChunkShift, encodeLogHeader, type Compression, type LogHeader } from './header.js';
import {
  RecordData, RecordZero, chunkHeader, contentDigest, extentRecord, trailerCounts, type LogTotals,
} from './records.js';

/** Where a log's extents and their bytes come from: a change tracker and the disk. */
export interface LogSource {
  /** Extents in ascending offset order, not overlapping; adjacent ones of one kind are coalesced. */
  extents: Iterable<Extent> | AsyncIterable<Extent>;
  /** Fills buf with the disk's bytes at offset (called only for 'data' extents). */
  read(offset: number, buf: Buffer): Promise<void>;
  /**
   * For a source that already holds the bytes in memory: the disk's length bytes at offset where they
   * lie, read by the writer in place of a copy through `read`. The writer is done with them (digested
   * and compressed) before it yields more output or asks for another view. Used for compressed logs.
   */
  view?(offset: number, length: number): Buffer;
}

/** The header fields a writer chooses; the rest have defaults. */
export type LogHeaderInit = Omit<LogHeader, 'compression' | 'chunkSize' | 'createdMs' | 'kind' | 'consistency'>
  & Partial<Pick<LogHeader, 'compression' | 'chunkSize' | 'createdMs' | 'kind' | 'consistency'>>;

export interface EncodeOptions {
  /** zstd level (default 1). */
  level?: number;
  /**
   * Yielded buffers may be reused (or overwritten) once the buffer after the next one is asked for.
   * Only for consumers that are done with what they are given by then, such as sealStream with
   * chunksOutliveNext: it saves an allocation per block.
   */
  reuseBuffers?: boolean;
  /**
   * Bytes per yielded block (default 1 MiB, at most 4 MiB); every block but the last is full. A sealer's
   * frame size here lets it seal blocks where they lie.
   */
  blockSize?: number;
}

/** Default output block size: big enough that a consumer sees few, small enough to stay cheap. */
const BlockBytes = 1 << 20;
const MaxBlockBytes = 4 << 20;

/** A complete header from what the writer chose: zstd, 1 MiB chunks, now, incremental, crash. */
export function completeHeader(init: LogHeaderInit): LogHeader {
  return {
    compression: 'zstd' satisfies Compression,
    chunkSize: 2 ** DefaultChunkShift,
    createdMs: Date.now(),
    kind: 'incremental',
    consistency: 'crash',
    ...init,
  };
}

/**
 * The plaintext `.hrl` stream of a log. Yields fresh buffers unless options.reuseBuffers. Unsorted,
 * overlapping or out-of-disk extents are `invalid_argument`, raised when the writer reaches them
 * (what came before has been yielded: consumers of a failed stream discard it).
 */
export async function* encodeLog(header: LogHeader, source: LogSource, options: EncodeOptions = {}): AsyncGenerator<Buffer> {
  const out = new BlockPacker(options.reuseBuffers ?? false, Math.min(options.blockSize ?? BlockBytes, MaxBlockBytes));
  yield* encodeInto(header, source, out, options.level ?? DefaultZstdLevel);
}

/**
 * Where the writer puts the log's bytes: plaintext blocks (BlockPacker) or the envelope's frames
 * (FrameSealer). The writer reads the disk straight into reserved space, so a byte read is never
 * copied again before it is sealed.
 */
export interface LogSink {
  /** Appends a copy of bytes. */
  push(bytes: Uint8Array): void;
  /** Up to max (at least 1) contiguous writable bytes at the end of the output. */
  reserve(max: number): Buffer;
  /** The first n reserved bytes now hold output. */
  commit(n: number): void;
  /** The output ready since the last call. */
  drain(): Iterable<Buffer>;
  /** Ends the output: what remains is ready. */
  finish(): void;
}

/** Writes the log into sink, yielding the sink's output as it becomes ready. */
export async function* encodeInto(header: LogHeader, source: LogSource, out: LogSink, level: number): AsyncGenerator<Buffer> {
  const headerBytes = encodeLogHeader(header);
  const compressorKey = `${header.compression}:${header.chunkSize}:${level}`;
  const compressor = spareCompressors.get(compressorKey)?.pop() ?? new ChunkCompressor(header.compression, header.chunkSize, level);
  const readBuf = header.compression === 'none' || source.view ? undefined : (spareReads.get(header.chunkSize)?.pop() ?? Buffer.allocUnsafeSlow(header.chunkSize));
  try {
    yield* encodeBody(header, source, out, headerBytes, compressor, readBuf);
  } finally {
    keep(spareCompressors, compressorKey, compressor);
    if (readBuf !== undefined) keep(spareReads, header.chunkSize, readBuf);
  }
}

/**
 * Compressors (each with its zstd context and scratch) and read buffers kept between logs on this
 * thread: a sealing thread writes one log per chunk of a disk, and fresh megabyte buffers per log set
 * off V8's full collections (see shared/buffer-pool.ts).
 */
const spareCompressors = new Map<string, ChunkCompressor[]>();
const spareReads = new Map<number, Buffer[]>();
const MaxSpares = 2;

function keep<K, V>(spares: Map<K, V[]>, key: K, value: V): void {
  let list = spares.get(key);
  if (list === undefined) spares.set(key, (list = []));
  if (list.length < MaxSpares) list.push(value);
}

async function* encodeBody(header: LogHeader, source: LogSource, out: LogSink, headerBytes: Buffer, compressor: ChunkCompressor, readBuf: Buffer | undefined): AsyncGenerator<Buffer> {
  const digest = contentDigest();
  const totals: LogTotals = { extentCount: 0, dataBytes: 0, zeroBytes: 0 };

  digest.update(headerBytes);
  out.push(headerBytes);
  for await (const extent of coalesce(source.extents, header.virtualSize)) {
    const data = extent.kind === 'data';
    const record = extentRecord(data ? RecordData : RecordZero, extent.offset, extent.length);
    digest.update(record);
    out.push(record);
    totals.extentCount++;
    if (!data) {
      totals.zeroBytes += extent.length;
      continue;
    }
    totals.dataBytes += extent.length;
    for (let done = 0; done < extent.length;) {
      const length = Math.min(header.chunkSize, extent.length - done);
      if (header.compression === 'none') {
        // Stored as is: read the disk straight into the output, no intermediate copy.
        out.push(chunkHeader(CodecStored, length));
        for (let at = extent.offset + done, left = length; left > 0;) {
          const slice = out.reserve(left);
          await source.read(at, slice);
          digest.update(slice);
          out.commit(slice.length);
          at += slice.length;
          left -= slice.length;
        }
        done += length;
        yield* out.drain();
        continue;
      }
      let raw: Buffer;
      if (source.view) {
        raw = source.view(extent.offset + done, length);
      } else {
        raw = readBuf!.subarray(0, length);
        await source.read(extent.offset + done, raw);
      }
      digest.update(raw);
      const chunk = compressor.compress(raw);
      out.push(chunkHeader(chunk.codec, chunk.bytes.length));
      out.push(chunk.bytes);
      done += raw.length;
      yield* out.drain();
    }
  }
  const counts = trailerCounts(totals);
  digest.update(counts);
  out.push(counts);
  out.push(digest.digest());
  out.finish();
  yield* out.drain();
}

/** Checks order and bounds and merges adjacent extents of one kind, looking one extent ahead. */
async function* coalesce(extents: Iterable<Extent> | AsyncIterable<Extent>, virtualSize: number): AsyncGenerator<Extent> {
  let pending: Extent | undefined;
  let end = 0;
  for await (const e of extents) {
    if (!Number.isSafeInteger(e.offset) || !Number.isSafeInteger(e.length) || e.offset < 0 || e.length < 0 || (e.kind !== 'data' && e.kind !== 'zero')) {
      throw ErrInvalidArgument(`extent ${JSON.stringify(e)} is not an offset, a length and a kind`);
    }
    if (e.length === 0) continue;
    if (e.offset + e.length > virtualSize) throw ErrInvalidArgument(`extent at ${e.offset} of ${e.length} bytes ends beyond the disk's ${virtualSize} bytes`);
    if (e.offset < end) throw ErrInvalidArgument(`extent at ${e.offset} overlaps or precedes the previous one, which ends at ${end}; extents must be sorted and not overlap`);
    if (pending !== undefined && pending.kind === e.kind && pending.offset + pending.length === e.offset) {
      pending = { ...pending, length: pending.length + e.length };
    } else {
      if (pending !== undefined) yield pending;
      pending = { offset: e.offset, length: e.length, kind: e.kind };
    }
    end = e.offset + e.length;
  }
  if (pending !== undefined) yield pending;
}

/**
 * Packs pieces into full blocks: fresh ones, so consumers may keep what they are given; or, for a
 * consumer that is done with a block once it asked for the one after next (reuse), recycled blocks.
 */
class BlockPacker implements LogSink {
  private readonly spare: Buffer[] = [];
  /** With reuse: the block the consumer may still hold, recycled when it asks for the one after. */
  private lent: Buffer | undefined;
  private block: Buffer | undefined;
  private used = 0;
  private reserved = 0;
  private readonly ready: Buffer[] = [];

  constructor(private readonly reuse: boolean, private readonly blockBytes: number) {}

  push(bytes: Uint8Array): void {
    copyInto(this, bytes);
  }

  reserve(max: number): Buffer {
    this.block ??= this.fresh();
    this.reserved = Math.min(this.blockBytes - this.used, max);
    return this.block.subarray(this.used, this.used + this.reserved);
  }

  commit(n: number): void {
    if (n > this.reserved || n < 0) throw new RangeError(`commit of ${n} bytes exceeds the ${this.reserved} reserved`);
    this.used += n;
    this.reserved = 0;
    if (this.used === this.blockBytes) this.flush();
  }

  finish(): void {
    this.flush();
  }

  /** Yields the full blocks (after finish, also the partial one). */
  *drain(): Generator<Buffer> {
    for (const b of this.ready.splice(0)) {
      yield b;
      if (!this.reuse) continue;
      // The consumer asked for the block after b: the one before b is free again.
      if (this.lent !== undefined && this.spare.length < 2) this.spare.push(this.lent);
      this.lent = Buffer.from(b.buffer, b.byteOffset, this.blockBytes);
    }
  }

  private flush(): void {
    if (this.block !== undefined && this.used > 0) this.ready.push(this.block.subarray(0, this.used));
    this.block = undefined;
    this.used = 0;
  }

  private fresh(): Buffer {
    return this.spare.pop() ?? Buffer.allocUnsafeSlow(this.blockBytes);
  }
}
