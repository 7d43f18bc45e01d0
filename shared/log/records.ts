/**
 * The `.hrl` record layer (docs/formats/hrl.md, "Extent records" and "Trailer"): byte sizes, encoders
 * for the fixed records, and the running digest over the log's uncompressed content.
 */
import { xxh3 } from '@node-rs/xxhash';

export const RecordData = 1;
export const RecordZero = 2;
export const RecordEnd = 3;
/** Type, offset, length. */
export const ExtentRecordBytes = 17;
/** Codec, stored length. */
export const ChunkHeaderBytes = 5;
/** Type and three counts (what the digest covers), then the digest. */
export const TrailerCountsBytes = 25;
export const DigestBytes = 8;

export function extentRecord(type: number, offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(ExtentRecordBytes);
  b[0] = type;
  b.writeBigUInt64LE(BigInt(offset), 1);
  b.writeBigUInt64LE(BigInt(length), 9);
  return b;
}

export function chunkHeader(codec: number, storedLength: number): Buffer {
  const b = Buffer.allocUnsafe(ChunkHeaderBytes);
  b[0] = codec;
  b.writeUInt32LE(storedLength, 1);
  return b;
}

export interface LogTotals {
  extentCount: number;
  dataBytes: number;
  zeroBytes: number;
}

export function trailerCounts(t: LogTotals): Buffer {
  const b = Buffer.allocUnsafe(TrailerCountsBytes);
  b[0] = RecordEnd;
  b.writeBigUInt64LE(BigInt(t.extentCount), 1);
  b.writeBigUInt64LE(BigInt(t.dataBytes), 9);
  b.writeBigUInt64LE(BigInt(t.zeroBytes), 17);
  return b;
}

/**
 * XXH3-64 (seed 0) over the uncompressed content, fed in log order by writer and reader alike. Not a
 * security mechanism (the envelope authenticates every byte): it catches writer and codec defects, and
 * at ~10x the speed of SHA-256 it costs almost nothing beside compression.
 */
export class ContentDigest {
  private readonly state = xxh3.Xxh3.withSeed(0n);

  update(bytes: Uint8Array): this {
    this.state.update(bytes);
    return this;
  }

  /** The 8-byte digest, little-endian. */
  digest(): Buffer {
    const b = Buffer.allocUnsafe(DigestBytes);
    b.writeBigUInt64LE(this.state.digest());
    return b;
  }
}

export function contentDigest(): ContentDigest {
  return new ContentDigest();
}
