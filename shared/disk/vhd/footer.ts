/**
 * The VHD footer ("conectix"): 512 bytes, big-endian, at the end of every VHD and, for dynamic
 * disks, also at offset 0. See docs/formats/vhd.md for the fields and what we refuse.
 */
import { randomBytes } from 'node:crypto';
import { ErrCorrupt, ErrInvalidArgument, ErrUnsupported } from '../../errors.js';

export const FooterSize = 512;
export const SectorSize = 512;
export const FooterCookie = 'conectix';
export const NoDataOffset = 0xffff_ffff_ffff_ffffn;
export const DiskTypeFixed = 2;
export const DiskTypeDynamic = 3;
export const DiskTypeDifferencing = 4;
/** The largest virtual size of a VHD: 2040 GiB (0xff000000 sectors). */
export const MaxVirtualSize = 0xff00_0000 * SectorSize;
/** Geometry beyond which CHS cannot describe a disk; readers then take Current Size. */
const MaxChsSectors = 65535 * 16 * 255;
/** Creator applications whose images state their size in Current Size rather than CHS. */
const SizeFromCurrentSize = new Set(['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0']);
/** Written as the creator application: readers take Current Size as the virtual size. */
export const OurCreatorApp = 'win ';
const VhdEpoch = Date.UTC(2000, 0, 1) / 1000;

export interface Footer {
  features: number;
  dataOffset: bigint;
  timestamp: number;
  creatorApp: string;
  originalSize: number;
  currentSize: number;
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
  diskType: number;
  uniqueId: Buffer;
}

/** One's complement of the byte sum, skipping the 4-byte checksum field at skip. */
export function vhdChecksum(buf: Buffer, skip: number): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i++) if (i < skip || i >= skip + 4) sum += buf[i]!;
  return ~sum >>> 0;
}

export function isFooter(buf: Buffer): boolean {
  return buf.length >= FooterSize && buf.toString('latin1', 0, 8) === FooterCookie && vhdChecksum(buf.subarray(0, FooterSize), 64) === buf.readUInt32BE(64);
}

/** Parses and bounds a footer; throws ErrCorrupt/ErrUnsupported naming the field. */
export function parseFooter(buf: Buffer): Footer {
  if (buf.length < FooterSize || buf.toString('latin1', 0, 8) !== FooterCookie) throw ErrCorrupt('no VHD footer ("conectix")');
  const sum = buf.readUInt32BE(64);
  if (vhdChecksum(buf.subarray(0, FooterSize), 64) !== sum) throw ErrCorrupt('VHD footer checksum mismatch');
  const version = buf.readUInt32BE(12);
  if (version >>> 16 !== 1) throw ErrUnsupported(`VHD file format version ${version.toString(16)} (only 1.x)`);
  const diskType = buf.readUInt32BE(60);
  if (diskType === DiskTypeDifferencing) throw ErrUnsupported('VHD differencing disks are not supported (convert the chain with Hyper-V or qemu-img first)');
  if (diskType !== DiskTypeFixed && diskType !== DiskTypeDynamic) throw ErrCorrupt(`VHD disk type ${diskType} (2 fixed, 3 dynamic)`);
  const currentSize = buf.readBigUInt64BE(48);
  if (currentSize > BigInt(MaxVirtualSize)) throw ErrUnsupported(`VHD current size ${currentSize} exceeds 2040 GiB`);
  const originalSize = buf.readBigUInt64BE(40);
  return {
    features: buf.readUInt32BE(8),
    dataOffset: buf.readBigUInt64BE(16),
    timestamp: buf.readUInt32BE(24),
    creatorApp: buf.toString('latin1', 28, 32),
    originalSize: originalSize > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(originalSize),
    currentSize: Number(currentSize),
    cylinders: buf.readUInt16BE(56),
    heads: buf.readUInt8(58),
    sectorsPerTrack: buf.readUInt8(59),
    diskType,
    uniqueId: Buffer.from(buf.subarray(68, 84)),
  };
}

/**
 * The virtual size readers see, as qemu's vpc driver decides it: the CHS geometry, unless the
 * creator application is one that states the size in Current Size or the geometry is the maximum.
 */
export function footerVirtualSize(f: Footer): number {
  const chsSectors = f.cylinders * f.heads * f.sectorsPerTrack;
  if (SizeFromCurrentSize.has(f.creatorApp) || chsSectors === MaxChsSectors) return Math.floor(f.currentSize / SectorSize) * SectorSize;
  return chsSectors * SectorSize;
}

export function serializeFooter(f: Footer): Buffer {
  const buf = Buffer.alloc(FooterSize);
  buf.write(FooterCookie, 0, 'latin1');
  buf.writeUInt32BE(f.features, 8);
  buf.writeUInt32BE(0x0001_0000, 12);
  buf.writeBigUInt64BE(f.dataOffset, 16);
  buf.writeUInt32BE(f.timestamp >>> 0, 24);
  buf.write(f.creatorApp.padEnd(4, '\0').slice(0, 4), 28, 'latin1');
  buf.writeUInt32BE(0x0001_0000, 32);
  buf.write('Wi2k', 36, 'latin1');
  buf.writeBigUInt64BE(BigInt(f.originalSize), 40);
  buf.writeBigUInt64BE(BigInt(f.currentSize), 48);
  buf.writeUInt16BE(f.cylinders, 56);
  buf.writeUInt8(f.heads, 58);
  buf.writeUInt8(f.sectorsPerTrack, 59);
  buf.writeUInt32BE(f.diskType, 60);
  f.uniqueId.copy(buf, 68, 0, 16);
  buf.writeUInt32BE(vhdChecksum(buf, 64), 64);
  return buf;
}

/** CHS geometry for a size, by the algorithm of the VHD specification (appendix). */
export function chsGeometry(size: number): { cylinders: number; heads: number; sectorsPerTrack: number } {
  const total = Math.min(Math.floor(size / SectorSize), MaxChsSectors);
  let spt: number;
  let heads: number;
  let cth: number;
  if (total >= 65535 * 16 * 63) {
    spt = 255; heads = 16; cth = Math.floor(total / spt);
  } else {
    spt = 17; cth = Math.floor(total / spt);
    heads = Math.max(4, Math.floor((cth + 1023) / 1024));
    if (cth >= heads * 1024 || heads > 16) { spt = 31; heads = 16; cth = Math.floor(total / spt); }
    if (cth >= heads * 1024) { spt = 63; heads = 16; cth = Math.floor(total / spt); }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectorsPerTrack: spt };
}

/** A new footer for a disk of virtualSize bytes (a whole number of sectors). */
export function newFooter(virtualSize: number, diskType: number, dataOffset: bigint): Footer {
  if (!Number.isSafeInteger(virtualSize) || virtualSize <= 0 || virtualSize % SectorSize !== 0) {
    throw ErrInvalidArgument(`VHD virtual size ${virtualSize} is not a positive multiple of 512`);
  }
  if (virtualSize > MaxVirtualSize) throw ErrInvalidArgument(`VHD virtual size ${virtualSize} exceeds 2040 GiB`);
  return {
    features: 2, dataOffset, timestamp: Math.max(0, Math.floor(Date.now() / 1000 - VhdEpoch)), creatorApp: OurCreatorApp,
    originalSize: virtualSize, currentSize: virtualSize, ...chsGeometry(virtualSize), diskType, uniqueId: randomBytes(16),
  };
}
