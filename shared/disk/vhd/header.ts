/**
 * The dynamic-disk header ("cxsparse"): 1024 bytes, big-endian, where the footer's Data Offset
 * points. It locates the block allocation table (BAT) and gives the block size.
 */
import { ErrCorrupt, ErrUnsupported } from '../../errors.js';
import { MaxVirtualSize, SectorSize, vhdChecksum } from './footer.js';

export const HeaderSize = 1024;
export const HeaderCookie = 'cxsparse';
export const DefaultBlockSize = 2 * 1024 * 1024;
export const MinBlockSize = 64 * 1024;
export const MaxBlockSize = 256 * 1024 * 1024;
/** A BAT entry of an unallocated block. */
export const Unallocated = 0xffff_ffff;

export interface DynamicHeader {
  tableOffset: number;
  maxTableEntries: number;
  blockSize: number;
}

const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

/** Bytes of the sector bitmap that precedes each block's data, padded to a sector. */
export function bitmapSize(blockSize: number): number {
  return Math.ceil(blockSize / SectorSize / 8 / SectorSize) * SectorSize;
}

export function checkBlockSize(blockSize: number): void {
  if (!Number.isSafeInteger(blockSize) || !isPowerOfTwo(blockSize) || blockSize < MinBlockSize || blockSize > MaxBlockSize) {
    throw ErrUnsupported(`VHD block size ${blockSize} (a power of two from 64 KiB to 256 MiB)`);
  }
}

/**
 * Parses and bounds a dynamic header against the file: the BAT must lie inside the file and have
 * an entry for every block of virtualSize.
 */
export function parseHeader(buf: Buffer, virtualSize: number, fileSize: number): DynamicHeader {
  if (buf.toString('latin1', 0, 8) !== HeaderCookie) throw ErrCorrupt('no VHD dynamic header ("cxsparse") where the footer points');
  if (vhdChecksum(buf, 36) !== buf.readUInt32BE(36)) throw ErrCorrupt('VHD dynamic header checksum mismatch');
  const version = buf.readUInt32BE(24);
  if (version >>> 16 !== 1) throw ErrUnsupported(`VHD dynamic header version ${version.toString(16)} (only 1.x)`);
  const blockSize = buf.readUInt32BE(32);
  checkBlockSize(blockSize);
  const maxTableEntries = buf.readUInt32BE(28);
  const needed = Math.ceil(virtualSize / blockSize);
  if (maxTableEntries < needed) throw ErrCorrupt(`VHD BAT has ${maxTableEntries} entries, the disk needs ${needed}`);
  if (maxTableEntries > Math.ceil(MaxVirtualSize / blockSize)) throw ErrCorrupt(`VHD BAT of ${maxTableEntries} entries exceeds the largest disk`);
  const tableOffset = buf.readBigUInt64BE(16);
  if (tableOffset < BigInt(SectorSize) || tableOffset + BigInt(maxTableEntries) * 4n > BigInt(fileSize)) {
    throw ErrCorrupt(`VHD BAT at ${tableOffset} (${maxTableEntries} entries) lies outside the file of ${fileSize} bytes`);
  }
  return { tableOffset: Number(tableOffset), maxTableEntries, blockSize };
}

export function serializeHeader(h: DynamicHeader): Buffer {
  const buf = Buffer.alloc(HeaderSize);
  buf.write(HeaderCookie, 0, 'latin1');
  buf.writeBigUInt64BE(0xffff_ffff_ffff_ffffn, 8);
  buf.writeBigUInt64BE(BigInt(h.tableOffset), 16);
  buf.writeUInt32BE(0x0001_0000, 24);
  buf.writeUInt32BE(h.maxTableEntries, 28);
  buf.writeUInt32BE(h.blockSize, 32);
  buf.writeUInt32BE(vhdChecksum(buf, 36), 36);
  return buf;
}
