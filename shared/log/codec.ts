/**
 * Per-chunk compression (docs/formats/hrl.md, chunks): zstd through zstd-napi's contexts with buffers
 * reused from chunk to chunk, lz4 through lz4-napi, or none. A chunk that does not shrink is stored as
 * is, so incompressible data costs one attempt and never grows.
 */
import { createRequire } from 'node:module';
import { compressSync as lz4Compress, uncompressSync as lz4Uncompress } from 'lz4-napi';
import type * as ZstdBindingModule from 'zstd-napi/binding.js';
import { ErrCorrupt } from '../errors.js';
import type { Compression } from './header.js';

type ZstdBinding = typeof ZstdBindingModule;
// zstd-napi's binding is CommonJS with names Node cannot see statically; require it.
const zstd = createRequire(import.meta.url)('zstd-napi/binding.js') as ZstdBinding;

/** Codec byte of a chunk: 0 stored as is, else the header's compression. */
export const CodecStored = 0;
export const CodecByCompression: Record<Compression, number> = { none: 0, zstd: 1, lz4: 2 };
export const DefaultZstdLevel = 1;

export interface EncodedChunk {
  codec: number;
  /** Valid until the next call to compress. */
  bytes: Buffer;
}

/** Compresses chunks for one log; owns its scratch buffer. */
export class ChunkCompressor {
  private readonly cctx: InstanceType<ZstdBinding['CCtx']> | undefined;
  private readonly scratch: Buffer | undefined;

  constructor(private readonly compression: Compression, chunkSize: number, private readonly level = DefaultZstdLevel) {
    if (compression === 'zstd') {
      this.cctx = new zstd.CCtx();
      this.scratch = Buffer.allocUnsafe(zstd.compressBound(chunkSize));
    }
  }

  compress(raw: Buffer): EncodedChunk {
    let packed: Buffer | undefined;
    if (this.compression === 'zstd') {
      const n = this.cctx!.compress(this.scratch!, raw, this.level);
      packed = this.scratch!.subarray(0, n);
    } else if (this.compression === 'lz4') {
      packed = lz4Compress(raw);
    }
    if (packed === undefined || packed.length >= raw.length) return { codec: CodecStored, bytes: raw };
    return { codec: CodecByCompression[this.compression], bytes: packed };
  }
}

/**
 * The thread's zstd decompression context, shared by every reader on it: decompress is synchronous
 * and keeps no state from one chunk to the next. A context per reader was native memory the garbage
 * collector does not see: thousands of short logs read one after another (a merge worker, the fuzz
 * target) piled up gigabytes of contexts before a collection freed them.
 */
let sharedDctx: InstanceType<ZstdBinding['DCtx']> | undefined;

/** Decompresses chunks for one log into one reused buffer of the log's chunk size. */
export class ChunkDecompressor {
  private readonly out: Buffer;

  constructor(private readonly compression: Compression, chunkSize: number) {
    this.out = compression === 'zstd' ? Buffer.allocUnsafe(chunkSize) : Buffer.alloc(0);
  }

  /**
   * The raw bytes of a chunk, exactly rawLength long, or `corrupt`. The result may be this object's
   * buffer: valid until the next call.
   */
  decompress(codec: number, stored: Buffer, rawLength: number, where: string): Buffer {
    if (codec === CodecStored) {
      if (stored.length !== rawLength) throw ErrCorrupt(`${where}: stored chunk is ${stored.length} bytes, expected ${rawLength}`);
      return stored;
    }
    if (codec !== CodecByCompression[this.compression] || this.compression === 'none') {
      throw ErrCorrupt(`${where}: chunk codec ${codec} does not match the log's compression (${this.compression})`);
    }
    try {
      if (this.compression === 'zstd') {
        sharedDctx ??= new zstd.DCtx();
        const n = sharedDctx.decompress(this.out.subarray(0, rawLength), stored);
        if (n === rawLength) return this.out.subarray(0, n);
      } else {
        // lz4-napi's block starts with the raw length; check it before it sizes an allocation.
        if (stored.length >= 4 && stored.readUInt32LE(0) === rawLength) {
          const raw = lz4Uncompress(stored);
          if (raw.length === rawLength) return raw;
        }
      }
    } catch (err) {
      throw ErrCorrupt(`${where}: chunk does not decompress (${(err as Error).message})`, err);
    }
    throw ErrCorrupt(`${where}: chunk does not decompress to its ${rawLength} bytes`);
  }
}
