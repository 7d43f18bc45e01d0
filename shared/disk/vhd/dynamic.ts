/**
 * Dynamic VHDs: a BAT maps each block of the virtual disk to its place in the file (a sector
 * bitmap, then the block's data) or marks it unallocated (reads as zeros).
 *
 * Reading ignores the sector bitmaps, as qemu does for dynamic disks; allocating a block sets
 * every bit. A new block goes where the footer was: its bitmap and the data written are stored,
 * the rest of the block stays a hole, the footer moves past the block, and only then does the BAT
 * entry point at it. Writes are serialized by one lock, so concurrent writers never allocate a
 * block twice.
 */
import type { FileHandle } from 'node:fs/promises';
import { ErrCorrupt, ErrUnsupported } from '../../errors.js';
import { checkRange, readFull, writeFull } from '../raw.js';
import type { Extent, ExtentQuery } from '../types.js';
import { isZero } from '../ops/zero.js';
import { VhdImage } from './base.js';
import { FooterSize, SectorSize, serializeFooter, type Footer } from './footer.js';
import { bitmapSize, HeaderSize, serializeHeader, Unallocated, type DynamicHeader } from './header.js';

const ZeroChunk = Buffer.alloc(1024 * 1024);

export class DynamicVhd extends VhdImage {
  protected subformat = 'dynamic';
  readonly blockSize: number;
  private readonly bitmapBytes: number;
  /** Where the trailing footer sits; new blocks are placed here. */
  private footerAt: number;
  private lock: Promise<unknown> = Promise.resolve();

  constructor(path: string, fh: FileHandle, footer: Footer, private header: DynamicHeader, private bat: Uint32Array,
    fileSize: number, footerAt: number, readOnly: boolean) {
    super(path, fh, footer, readOnly);
    this.blockSize = header.blockSize;
    this.bitmapBytes = bitmapSize(header.blockSize);
    this.footerAt = footerAt;
    // Every used entry must lie inside the file, past the footer copy, clear of the header and BAT.
    const headerAt = Number(footer.dataOffset);
    const batEnd = header.tableOffset + header.maxTableEntries * 4;
    const used = Math.ceil(this.virtualSize / this.blockSize);
    for (let i = 0; i < used; i++) {
      const e = bat[i]!;
      if (e === Unallocated) continue;
      const start = e * SectorSize;
      const end = start + this.bitmapBytes + this.blockLength(i);
      if (start < FooterSize || end > fileSize) throw ErrCorrupt(`VHD BAT entry ${i} points at sector ${e}, outside the file of ${fileSize} bytes`);
      if (overlaps(start, end, headerAt, headerAt + HeaderSize) || overlaps(start, end, header.tableOffset, batEnd)) {
        throw ErrCorrupt(`VHD BAT entry ${i} points at sector ${e}, inside the header or the BAT`);
      }
      this.footerAt = Math.max(this.footerAt, Math.ceil((start + this.bitmapBytes + this.blockSize) / SectorSize) * SectorSize);
    }
    this.footerAt = Math.max(this.footerAt, this.header.tableOffset + Math.ceil(header.maxTableEntries * 4 / SectorSize) * SectorSize);
  }

  /** Bytes of block i inside the virtual disk (the last block may be partial). */
  private blockLength(i: number): number {
    return Math.min(this.blockSize, this.virtualSize - i * this.blockSize);
  }

  /** File offset of virtual byte offset, or undefined when its block is unallocated. */
  private fileOffset(offset: number): number | undefined {
    const e = this.bat[Math.floor(offset / this.blockSize)]!;
    return e === Unallocated ? undefined : e * SectorSize + this.bitmapBytes + (offset % this.blockSize);
  }

  /** Calls fn for each block-bounded piece of [offset, offset+length). */
  private async eachPiece(offset: number, length: number, fn: (at: number, len: number, block: number) => Promise<void>): Promise<void> {
    for (let at = offset, end = offset + length; at < end;) {
      const block = Math.floor(at / this.blockSize);
      const len = Math.min(end, (block + 1) * this.blockSize) - at;
      await fn(at, len, block);
      at += len;
    }
  }

  async read(offset: number, buf: Buffer): Promise<void> {
    checkRange(offset, buf.length, this.virtualSize, 'read');
    await this.eachPiece(offset, buf.length, async (at, len) => {
      const piece = buf.subarray(at - offset, at - offset + len);
      const pos = this.fileOffset(at);
      if (pos === undefined) piece.fill(0);
      else await readFull(this.fh, piece, pos);
    });
  }

  write(offset: number, data: Buffer): Promise<void> {
    return this.locked(async () => {
      this.writable();
      checkRange(offset, data.length, this.virtualSize, 'write');
      await this.eachPiece(offset, data.length, async (at, len, block) => {
        const piece = data.subarray(at - offset, at - offset + len);
        const pos = this.fileOffset(at);
        if (pos !== undefined) await writeFull(this.fh, piece, pos);
        else if (!isZero(piece)) await this.allocate(block, at % this.blockSize, piece);
      });
    });
  }

  zero(offset: number, length: number): Promise<void> {
    return this.locked(async () => {
      this.writable();
      checkRange(offset, length, this.virtualSize, 'zero');
      await this.eachPiece(offset, length, async (at, len, block) => {
        const pos = this.fileOffset(at);
        if (pos === undefined) return;
        if (len === this.blockLength(block)) return this.setEntry(block, Unallocated);
        for (let done = 0; done < len; done += ZeroChunk.length) {
          await writeFull(this.fh, ZeroChunk.subarray(0, Math.min(ZeroChunk.length, len - done)), pos + done);
        }
      });
    });
  }

  /** Places block at the footer's position with data at inBlock, moves the footer, then points the BAT at it. */
  private async allocate(block: number, inBlock: number, data: Buffer): Promise<void> {
    const start = this.footerAt;
    await writeFull(this.fh, Buffer.alloc(this.bitmapBytes, 0xff), start);
    await writeFull(this.fh, data, start + this.bitmapBytes + inBlock);
    this.footerAt = start + this.bitmapBytes + this.blockSize;
    await writeFull(this.fh, serializeFooter(this.footer), this.footerAt);
    await this.setEntry(block, start / SectorSize);
  }

  private async setEntry(block: number, value: number): Promise<void> {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(value);
    await writeFull(this.fh, b, this.header.tableOffset + 4 * block);
    this.bat[block] = value;
  }

  async *extents(query: ExtentQuery = {}): AsyncIterable<Extent> {
    const start = query.offset ?? 0;
    const length = query.length ?? this.virtualSize - start;
    checkRange(start, length, this.virtualSize, 'extents');
    let pending: Extent | undefined;
    for (let at = start, end = start + length; at < end;) {
      const block = Math.floor(at / this.blockSize);
      const next = Math.min(end, (block + 1) * this.blockSize);
      const kind = this.bat[block] === Unallocated ? 'zero' : 'data';
      const from = at;
      at = next;
      if (kind === 'zero' && query.layer !== 'own') continue;
      if (pending && pending.kind === kind && pending.offset + pending.length === from) pending.length = next - pending.offset;
      else {
        if (pending) yield pending;
        pending = { offset: from, length: next - from, kind };
      }
    }
    if (pending) yield pending;
  }

  /** Grows within the BAT's capacity; both footers carry the new size. */
  resize(newVirtualSize: number): Promise<void> {
    return this.locked(async () => {
      this.writable();
      const footer = this.grownFooter(newVirtualSize);
      const entries = Math.ceil(newVirtualSize / this.blockSize);
      if (entries > this.header.maxTableEntries) await this.growBat(entries);
      const bytes = serializeFooter(footer);
      await writeFull(this.fh, bytes, this.footerAt);
      await writeFull(this.fh, bytes, 0);
      this.footer = footer;
      this.virtualSize = newVirtualSize;
    });
  }

  /**
   * Extends the BAT into the unused entries after it (the padding to a sector, all 0xFF), which
   * must end before the first block; rewrites the header with the new entry count.
   */
  private async growBat(entries: number): Promise<void> {
    const { tableOffset, maxTableEntries } = this.header;
    let room = this.footerAt;
    for (let i = 0; i < this.bat.length; i++) if (this.bat[i] !== Unallocated) room = Math.min(room, this.bat[i]! * SectorSize);
    const extra = Buffer.alloc((entries - maxTableEntries) * 4);
    if (tableOffset + entries * 4 > room) {
      throw ErrUnsupported(`cannot grow this VHD past ${maxTableEntries * this.blockSize} bytes (its BAT has no room for more entries)`);
    }
    await readFull(this.fh, extra, tableOffset + maxTableEntries * 4);
    if (!extra.every((b) => b === 0xff)) throw ErrUnsupported('cannot grow this VHD: the space after its BAT is in use');
    const header = { ...this.header, maxTableEntries: entries };
    await writeFull(this.fh, serializeHeader(header), Number(this.footer.dataOffset));
    this.header = header;
    const bat = new Uint32Array(entries).fill(Unallocated);
    bat.set(this.bat);
    this.bat = bat;
  }

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }
}

const overlaps = (a0: number, a1: number, b0: number, b1: number) => a0 < b1 && b0 < a1;

/** Reads the BAT's entries into memory (4 bytes each, bounded by parseHeader against the file). */
export async function readBat(fh: FileHandle, header: DynamicHeader): Promise<Uint32Array> {
  const raw = Buffer.alloc(header.maxTableEntries * 4);
  await readFull(fh, raw, header.tableOffset);
  const bat = new Uint32Array(header.maxTableEntries);
  for (let i = 0; i < bat.length; i++) bat[i] = raw.readUInt32BE(i * 4);
  return bat;
}
