/**
 * Reading a change log (docs/formats/hrl.md, "Reader"): the header first, then the extents as a
 * stream of items in bounded memory, then the trailer's counts and digest. Every length is bounded
 * before it is read; every rule of the format is checked as the bytes go by.
 */
import { ByteReader, type ByteSource } from '../crypto/byte-reader.js';
import type { Extent } from '../disk/types.js';
import { ErrCorrupt } from '../errors.js';
import { ChunkDecompressor, CodecStored } from './codec.js';
import { decodeLogHeader, headerLength, readSafe, type LogHeader } from './header.js';
import {
  ChunkHeaderBytes, DigestBytes, ExtentRecordBytes, RecordData, RecordEnd, RecordZero, TrailerCountsBytes,
  contentDigest, trailerCounts, type LogTotals,
} from './records.js';

/** A zero extent, or a piece of a data extent (at most one chunk; stored chunks may come in several). */
export type LogItem =
  | { kind: 'zero'; offset: number; length: number }
  | {
    kind: 'data';
    /** Where this piece's bytes go. */
    offset: number;
    length: number;
    /** The piece's bytes: valid until the next item is asked for (copy to keep them). */
    data: Buffer;
    /** The whole extent this piece belongs to (its first piece has offset === extent.offset). */
    extent: { offset: number; length: number };
  };

export interface LogTrailer extends LogTotals {
  digest: string;
}

/**
 * An open log: its header, and its items read once. `trailer` is set when the items ended without
 * error, which is the only point at which the log is known whole and correct.
 */
export class LogReader {
  trailer: LogTrailer | undefined;

  constructor(readonly header: LogHeader, readonly headerBytes: Buffer, private readonly reader: ByteReader) {}

  /** Reads the header from a plaintext `.hrl` stream. */
  static async open(source: ByteSource | ByteReader): Promise<LogReader> {
    const reader = source instanceof ByteReader ? source : new ByteReader(source);
    try {
      const first = await reader.read(12);
      const length = headerLength(first);
      const rest = await reader.read(length - 12);
      const headerBytes = Buffer.concat([first, rest]);
      return new LogReader(decodeLogHeader(headerBytes), headerBytes, reader);
    } catch (err) {
      await reader.close();
      throw err;
    }
  }

  /**
   * The extents, piece by piece; throws `corrupt` at the first broken rule. Read once. Ending the loop
   * early, or a failure, closes the source.
   */
  async *items(): AsyncGenerator<LogItem> {
    try {
      yield* this.readItems();
    } finally {
      await this.reader.close();
    }
  }

  private async *readItems(): AsyncGenerator<LogItem> {
    const { header, reader } = this;
    const digest = contentDigest().update(this.headerBytes);
    const decompressor = new ChunkDecompressor(header.compression, header.chunkSize);
    const totals: LogTotals = { extentCount: 0, dataBytes: 0, zeroBytes: 0 };
    let end = 0;
    let previousType = 0;
    for (;;) {
      const type = (await this.exactly(1, 'the end record'))[0]!;
      if (type === RecordEnd) break;
      if (type !== RecordData && type !== RecordZero) throw ErrCorrupt(`record type ${type} at byte ${reader.position - 1} is not data, zero or end`);
      const record = Buffer.concat([Buffer.of(type), await this.exactly(ExtentRecordBytes - 1, 'an extent record')]);
      const offset = readSafe(record, 1, 'extent offset');
      const length = readSafe(record, 9, 'extent length');
      const where = `extent at ${offset}`;
      if (length < 1 || offset + length > header.virtualSize) throw ErrCorrupt(`${where}: length ${length} is 0 or ends beyond the disk's ${header.virtualSize} bytes`);
      if (offset < end) throw ErrCorrupt(`${where}: overlaps or precedes the previous extent, which ends at ${end}`);
      if (offset === end && type === previousType) throw ErrCorrupt(`${where}: not coalesced with the previous extent of the same kind`);
      digest.update(record);
      totals.extentCount++;
      end = offset + length;
      previousType = type;
      if (type === RecordZero) {
        totals.zeroBytes += length;
        yield { kind: 'zero', offset, length };
        continue;
      }
      totals.dataBytes += length;
      const extent = { offset, length };
      for (let done = 0; done < length;) {
        const rawLength = Math.min(header.chunkSize, length - done);
        const chunkHead = await this.exactly(ChunkHeaderBytes, 'a chunk header');
        const codec = chunkHead[0]!;
        const storedLength = chunkHead.readUInt32LE(1);
        if (storedLength < 1 || storedLength > rawLength || (codec !== 0 && storedLength === rawLength)) {
          throw ErrCorrupt(`${where}: chunk at ${offset + done} claims ${storedLength} stored bytes for ${rawLength} raw bytes`);
        }
        if (codec === CodecStored && storedLength === rawLength) {
          // Stored as is: hand out the pieces as they arrived rather than copying them together.
          const pieces = await this.reader.readPieces(storedLength);
          if (pieces.reduce((n, p) => n + p.length, 0) < storedLength) throw ErrCorrupt('truncated: the log ends inside a chunk');
          for (const data of pieces) {
            digest.update(data);
            yield { kind: 'data', offset: offset + done, length: data.length, data, extent };
            done += data.length;
          }
          continue;
        }
        const stored = await this.exactly(storedLength, 'a chunk');
        const data = decompressor.decompress(codec, stored, rawLength, `${where}: chunk at ${offset + done}`);
        digest.update(data);
        yield { kind: 'data', offset: offset + done, length: rawLength, data, extent };
        done += rawLength;
      }
    }
    this.trailer = await this.checkTrailer(totals, digest.update(trailerCounts(totals)).digest());
  }

  /**
   * The whole extents (offset, length, kind) without their bytes, read through items(): chunks are
   * still decompressed and checked. Read once, like items().
   */
  async *extents(): AsyncGenerator<Extent> {
    for await (const item of this.items()) {
      if (item.kind === 'zero') yield { offset: item.offset, length: item.length, kind: 'zero' };
      else if (item.offset + item.length === item.extent.offset + item.extent.length) yield { ...item.extent, kind: 'data' };
    }
  }

  private async checkTrailer(totals: LogTotals, computed: Buffer): Promise<LogTrailer> {
    const rest = await this.exactly(TrailerCountsBytes - 1 + DigestBytes, 'the trailer');
    const stated: LogTotals = { extentCount: readSafe(rest, 0, 'extent count'), dataBytes: readSafe(rest, 8, 'data bytes'), zeroBytes: readSafe(rest, 16, 'zero bytes') };
    for (const k of ['extentCount', 'dataBytes', 'zeroBytes'] as const) {
      if (stated[k] !== totals[k]) throw ErrCorrupt(`trailer says ${k} ${stated[k]}, the log holds ${totals[k]}`);
    }
    const digest = rest.subarray(TrailerCountsBytes - 1);
    if (!digest.equals(computed)) throw ErrCorrupt('trailer digest does not match the log content');
    if (!(await this.reader.atEnd())) throw ErrCorrupt('data after the trailer');
    return { ...totals, digest: digest.toString('hex') };
  }

  private async exactly(n: number, what: string): Promise<Buffer> {
    const b = await this.reader.read(n);
    if (b.length < n) throw ErrCorrupt(`truncated: the log ends inside ${what}`);
    return b;
  }
}
