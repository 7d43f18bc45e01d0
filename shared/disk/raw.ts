/**
 * Raw images: the file is the disk. Sparse files stay sparse: a write of zeros over a range that
 * already reads as zeros is skipped, and zero() overwrites only the granules that hold non-zero data
 * (those are allocated already), so neither ever allocates a hole.
 *
 * Extents: the filesystem's holes come from SEEK_DATA/SEEK_HOLE (shared/disk/sparse.ts; where that
 * cannot be asked, the whole file counts as data), and within its data ranges extents() reads the
 * file in large chunks and reports runs of all-zero granules as zeros too, as `qemu-img convert`
 * detects zero data. With scan: false it reads nothing and reports the data ranges as they are
 * (callers that read them anyway detect zeros themselves). Node has no fallocate, so zero() cannot
 * release space; it only guarantees the range reads as zeros.
 */
import { open, stat, type FileHandle } from 'node:fs/promises';
import { ErrInvalidArgument, ErrUnsupported, LifeboatError } from '../errors.js';
import type { CreateOptions, DiskFormatDriver, DiskImage, DiskInfo, Extent, ExtentQuery } from './types.js';
import { isZero, nonZeroRuns } from './ops/zero.js';
import { dataRanges } from './sparse.js';

/** Resolution of hole detection and of zero(): a filesystem block. */
export const ZeroGranule = 4096;
/** Reads of extents() and zero() go through one scratch buffer of this size. */
const ScanChunk = 1024 * 1024;

/** Reads into buf at pos until it is full; bytes past the end of the file read as zeros. */
export async function readFull(fh: FileHandle, buf: Buffer, pos: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, pos + done);
    if (bytesRead === 0) { buf.fill(0, done); return; }
    done += bytesRead;
  }
}

export async function writeFull(fh: FileHandle, buf: Buffer, pos: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, pos + done);
    done += bytesWritten;
  }
}

/** Refuses a range outside [0, size): callers address the virtual disk, never past its end. */
export function checkRange(offset: number, length: number, size: number, what: string): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw ErrInvalidArgument(`${what} [${offset}, +${length}) is outside the disk (size ${size})`);
  }
}

/**
 * The virtual disk stored flat in a file at [base, base + size): a raw image, or a fixed VHD whose
 * footer follows the data. Holds no state besides its handle.
 */
export class FlatRegion {
  private scratch: Buffer | undefined;
  constructor(readonly fh: FileHandle, readonly base: number, public size: number) {}

  async read(offset: number, buf: Buffer): Promise<void> {
    checkRange(offset, buf.length, this.size, 'read');
    await readFull(this.fh, buf, this.base + offset);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    checkRange(offset, data.length, this.size, 'write');
    if (isZero(data)) return this.zero(offset, data.length);
    await writeFull(this.fh, data, this.base + offset);
  }

  /** Writes zeros only over granules holding non-zero data; holes stay holes. */
  async zero(offset: number, length: number): Promise<void> {
    checkRange(offset, length, this.size, 'zero');
    const end = offset + length;
    // Scanned from an aligned start, so granules match filesystem blocks and a zero written into
    // a granule holding data never fills a neighbouring hole.
    for (let at = Math.floor(offset / ScanChunk) * ScanChunk; at < end; at += ScanChunk) {
      const buf = this.scratchBuf().subarray(0, Math.min(ScanChunk, end - at));
      await readFull(this.fh, buf, this.base + at);
      for (const [runStart, e] of nonZeroRuns(buf, ZeroGranule)) {
        const s = Math.max(runStart, offset - at);
        if (s >= e) continue;
        buf.fill(0, s, e);
        await writeFull(this.fh, buf.subarray(s, e), this.base + at + s);
      }
    }
  }

  /**
   * Non-zero runs (granule resolution) as 'data'; with includeZero also the gaps as 'zero'. Holes
   * the filesystem reports (SEEK_DATA, shared/disk/sparse.ts) are gaps without being read; with
   * scan: false the filesystem's data ranges are the extents, unread (the whole range where it
   * cannot say).
   */
  async *extents(query: ExtentQuery, includeZero: boolean): AsyncIterable<Extent> {
    const start = query.offset ?? 0;
    const length = query.length ?? this.size - start;
    checkRange(start, length, this.size, 'extents');
    const end = start + length;
    const mapped = dataRanges(this.fh.fd, this.base + start, length)?.map((r) => ({ offset: r.offset - this.base, length: r.length }));
    const ranges = mapped ?? (length > 0 ? [{ offset: start, length }] : []);
    let pending: Extent | undefined;
    const emit = function* (e: Extent): Generator<Extent> {
      if (e.length === 0) return;
      if (pending && pending.kind === e.kind && pending.offset + pending.length === e.offset) { pending.length += e.length; return; }
      if (pending) yield pending;
      pending = { ...e };
    };
    let covered = start;
    for (const range of ranges) {
      if (includeZero) yield* emit({ offset: covered, length: range.offset - covered, kind: 'zero' });
      covered = range.offset + range.length;
      if (query.scan === false) {
        yield* emit({ offset: range.offset, length: range.length, kind: 'data' });
        continue;
      }
      for (let at = range.offset; at < covered; at += ScanChunk) {
        const buf = this.scratchBuf().subarray(0, Math.min(ScanChunk, covered - at));
        await readFull(this.fh, buf, this.base + at);
        let cursor = 0;
        for (const [s, e] of nonZeroRuns(buf, ZeroGranule)) {
          if (includeZero) yield* emit({ offset: at + cursor, length: s - cursor, kind: 'zero' });
          yield* emit({ offset: at + s, length: e - s, kind: 'data' });
          cursor = e;
        }
        if (includeZero) yield* emit({ offset: at + cursor, length: buf.length - cursor, kind: 'zero' });
      }
    }
    if (includeZero) yield* emit({ offset: covered, length: end - covered, kind: 'zero' });
    if (pending) yield pending;
  }

  private scratchBuf(): Buffer {
    this.scratch ??= Buffer.allocUnsafe(ScanChunk);
    return this.scratch;
  }
}

class RawImage implements DiskImage {
  readonly format = 'raw' as const;
  readonly logicalSectorSize = 512;
  readonly physicalSectorSize = 4096;
  readonly blockSize = undefined;
  readonly parent = undefined;
  private closed = false;

  constructor(readonly path: string, private readonly region: FlatRegion, readonly readOnly: boolean) {}

  get virtualSize(): number { return this.region.size; }

  read(offset: number, buf: Buffer): Promise<void> { return this.region.read(offset, buf); }
  async write(offset: number, data: Buffer): Promise<void> { this.writable(); return this.region.write(offset, data); }
  async zero(offset: number, length: number): Promise<void> { this.writable(); return this.region.zero(offset, length); }
  extents(query: ExtentQuery = {}): AsyncIterable<Extent> { return this.region.extents(query, query.layer === 'own'); }

  async resize(newVirtualSize: number): Promise<void> {
    this.writable();
    if (!Number.isSafeInteger(newVirtualSize) || newVirtualSize < this.region.size) {
      throw ErrInvalidArgument(`cannot resize from ${this.region.size} to ${newVirtualSize} bytes: disks only grow`);
    }
    await this.region.fh.truncate(newVirtualSize);
    this.region.size = newVirtualSize;
  }

  async flush(): Promise<void> { if (!this.readOnly) await this.region.fh.datasync(); }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try { await this.flush(); } finally { await this.region.fh.close(); }
  }

  async info(): Promise<DiskInfo> {
    const st = await this.region.fh.stat();
    const allocatedBytes = st.blocks * 512;
    return {
      path: this.path, format: 'raw', subformat: allocatedBytes < st.size ? 'sparse' : 'fixed', virtualSize: this.region.size,
      logicalSectorSize: this.logicalSectorSize, physicalSectorSize: this.physicalSectorSize, blockSize: undefined,
      allocatedBytes, parentChain: [],
    };
  }

  private writable(): void {
    if (this.readOnly) throw new LifeboatError('forbidden', `${this.path}: opened read-only`);
  }
}

async function openRaw(path: string, readOnly: boolean): Promise<DiskImage> {
  const st = await stat(path);
  if (!st.isFile()) throw ErrUnsupported('not a regular file');
  const fh = await open(path, readOnly ? 'r' : 'r+');
  return new RawImage(path, new FlatRegion(fh, 0, st.size), readOnly);
}

export const rawDriver: DiskFormatDriver = {
  format: 'raw',
  /** Raw matches anything; the registry tries it last. */
  probe: () => true,
  open: (path, options) => openRaw(path, options.readOnly ?? false),
  async create(path: string, options: CreateOptions): Promise<DiskImage> {
    const size = options.virtualSize;
    if (!Number.isSafeInteger(size) || size < 0) throw ErrInvalidArgument(`virtual size ${size} is not a byte count`);
    if (options.type === 'fixed') throw ErrUnsupported('raw images are always sparse; use --type dynamic or no --type');
    if (options.blockSize !== undefined) throw ErrInvalidArgument('raw images have no block size');
    const fh = await open(path, 'wx+', 0o600);
    try {
      await fh.truncate(size);
    } catch (err) {
      await fh.close();
      throw err;
    }
    return new RawImage(path, new FlatRegion(fh, 0, size), false);
  },
};
