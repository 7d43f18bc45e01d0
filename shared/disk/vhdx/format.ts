/**
 * VHDX on-disk structures of the header section (MS-VHDX §2.2): the file type identifier, the two
 * headers and the two region tables. Parsers here take bytes already read and bounded by the caller;
 * they throw LifeboatError('corrupt'|'unsupported') naming what is wrong. All fields little-endian.
 */
import { randomBytes } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
import { ErrCorrupt, ErrUnsupported } from '../../errors.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

export const FileIdOffset = 0;
export const HeaderOffsets = [64 * KiB, 128 * KiB] as const;
export const RegionTableOffsets = [192 * KiB, 256 * KiB] as const;
export const HeaderSize = 4 * KiB;
export const RegionTableSize = 64 * KiB;
export const HeaderSectionSize = MiB;

export const MaxVirtualSize = 64 * TiB;
export const MinBlockSize = MiB;
export const MaxBlockSize = 256 * MiB;
export const MaxRegionEntries = 2047;
/** Log lengths above this are refused: we read the whole log into memory to replay it. */
export const MaxLogLength = 256 * MiB;

export const SigFile = 'vhdxfile';
export const SigHeader = 'head';
export const SigRegion = 'regi';

export const GuidBatRegion = '2dc27766-f623-4200-9d64-115e9bfd4a08';
export const GuidMetadataRegion = '8b7ca206-4790-4b9a-b8fe-575f050f886e';
export const ZeroGuid = '00000000-0000-0000-0000-000000000000';

/** Reads a Microsoft GUID (Data1..3 little-endian, Data4 as bytes) as lowercase text. */
export function readGuid(buf: Buffer, at: number): string {
  const d1 = buf.readUInt32LE(at).toString(16).padStart(8, '0');
  const d2 = buf.readUInt16LE(at + 4).toString(16).padStart(4, '0');
  const d3 = buf.readUInt16LE(at + 6).toString(16).padStart(4, '0');
  const d4 = buf.subarray(at + 8, at + 10).toString('hex');
  const d5 = buf.subarray(at + 10, at + 16).toString('hex');
  return `${d1}-${d2}-${d3}-${d4}-${d5}`;
}

/** Writes a GUID in text form ("xxxxxxxx-xxxx-…", braces allowed) in Microsoft byte order. */
export function writeGuid(buf: Buffer, at: number, guid: string): void {
  const hex = guid.replace(/[{}-]/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new Error(`not a GUID: ${guid}`);
  buf.writeUInt32LE(parseInt(hex.slice(0, 8), 16), at);
  buf.writeUInt16LE(parseInt(hex.slice(8, 12), 16), at + 4);
  buf.writeUInt16LE(parseInt(hex.slice(12, 16), 16), at + 6);
  Buffer.from(hex.slice(16), 'hex').copy(buf, at + 8);
}

/** A fresh random (version 4) GUID in text form. */
export function newGuid(): string {
  const b = randomBytes(16);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Normalises GUID text for comparison: lowercase, no braces. */
export function normGuid(g: string): string {
  return g.trim().replace(/^\{|\}$/g, '').toLowerCase();
}

/** CRC-32C of buf with the 4-byte checksum field at checksumAt taken as zero. */
export function checksumWithHole(buf: Buffer, checksumAt: number): number {
  const a = crc32c(buf.subarray(0, checksumAt));
  const b = crc32c(Buffer.alloc(4), a);
  return crc32c(buf.subarray(checksumAt + 4), b);
}

export function readU64(buf: Buffer, at: number): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) return Number.MAX_SAFE_INTEGER;
  return Number(v);
}

export function writeU64(buf: Buffer, at: number, v: number): void {
  buf.writeBigUInt64LE(BigInt(v), at);
}

export interface VhdxHeader {
  sequenceNumber: bigint;
  fileWriteGuid: string;
  dataWriteGuid: string;
  logGuid: string;
  logVersion: number;
  version: number;
  logLength: number;
  logOffset: number;
}

/** Parses one 4 KiB header; undefined when its signature or checksum is wrong (the other may do). */
export function parseHeader(buf: Buffer): VhdxHeader | undefined {
  if (buf.length < HeaderSize || buf.toString('latin1', 0, 4) !== SigHeader) return undefined;
  const sector = buf.subarray(0, HeaderSize);
  if (checksumWithHole(sector, 4) !== sector.readUInt32LE(4)) return undefined;
  return {
    sequenceNumber: sector.readBigUInt64LE(8),
    fileWriteGuid: readGuid(sector, 16),
    dataWriteGuid: readGuid(sector, 32),
    logGuid: readGuid(sector, 48),
    logVersion: sector.readUInt16LE(64),
    version: sector.readUInt16LE(66),
    logLength: sector.readUInt32LE(68),
    logOffset: readU64(sector, 72),
  };
}

export function serializeHeader(h: VhdxHeader): Buffer {
  const b = Buffer.alloc(HeaderSize);
  b.write(SigHeader, 0, 'latin1');
  b.writeBigUInt64LE(h.sequenceNumber, 8);
  writeGuid(b, 16, h.fileWriteGuid);
  writeGuid(b, 32, h.dataWriteGuid);
  writeGuid(b, 48, h.logGuid);
  b.writeUInt16LE(h.logVersion, 64);
  b.writeUInt16LE(h.version, 66);
  b.writeUInt32LE(h.logLength, 68);
  writeU64(b, 72, h.logOffset);
  b.writeUInt32LE(checksumWithHole(b, 4), 4);
  return b;
}

/** Picks the current header: the valid one with the higher sequence number (§2.2.2.1). */
export function currentHeader(h1: VhdxHeader | undefined, h2: VhdxHeader | undefined): { header: VhdxHeader; slot: 0 | 1 } {
  if (!h1 && !h2) throw ErrCorrupt('both headers are invalid (bad signature or CRC-32C)');
  if (h1 && (!h2 || h1.sequenceNumber >= h2.sequenceNumber)) return { header: h1, slot: 0 };
  return { header: h2!, slot: 1 };
}

export interface RegionEntry {
  guid: string;
  fileOffset: number;
  length: number;
  required: boolean;
}

/** Parses one 64 KiB region table; undefined when signature, checksum or count is wrong. */
export function parseRegionTable(buf: Buffer): RegionEntry[] | undefined {
  if (buf.length < RegionTableSize || buf.toString('latin1', 0, 4) !== SigRegion) return undefined;
  if (checksumWithHole(buf.subarray(0, RegionTableSize), 4) !== buf.readUInt32LE(4)) return undefined;
  const count = buf.readUInt32LE(8);
  if (count > MaxRegionEntries) return undefined;
  const entries: RegionEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = 16 + i * 32;
    entries.push({ guid: readGuid(buf, at), fileOffset: readU64(buf, at + 16), length: buf.readUInt32LE(at + 24), required: (buf.readUInt32LE(at + 28) & 1) === 1 });
  }
  return entries;
}

export function serializeRegionTable(entries: RegionEntry[]): Buffer {
  const b = Buffer.alloc(RegionTableSize);
  b.write(SigRegion, 0, 'latin1');
  b.writeUInt32LE(entries.length, 8);
  entries.forEach((e, i) => {
    const at = 16 + i * 32;
    writeGuid(b, at, e.guid);
    writeU64(b, at + 16, e.fileOffset);
    b.writeUInt32LE(e.length, at + 24);
    b.writeUInt32LE(e.required ? 1 : 0, at + 28);
  });
  b.writeUInt32LE(checksumWithHole(b, 4), 4);
  return b;
}

export interface Regions {
  bat: RegionEntry;
  metadata: RegionEntry;
}

/**
 * Validates a region table against the file: the BAT and metadata regions present once each,
 * 1 MiB aligned, inside the file and past the header section, not overlapping; any other region
 * marked required is refused.
 */
export function validateRegions(entries: RegionEntry[], fileSize: number): Regions {
  let bat: RegionEntry | undefined;
  let metadata: RegionEntry | undefined;
  for (const e of entries) {
    if (e.guid === GuidBatRegion) {
      if (bat) throw ErrCorrupt('region table lists the BAT twice');
      bat = e;
    } else if (e.guid === GuidMetadataRegion) {
      if (metadata) throw ErrCorrupt('region table lists the metadata region twice');
      metadata = e;
    } else if (e.required) {
      throw ErrUnsupported(`unknown required region ${e.guid}`);
    }
  }
  if (!bat) throw ErrCorrupt('region table has no BAT region');
  if (!metadata) throw ErrCorrupt('region table has no metadata region');
  for (const [name, r] of [['BAT', bat], ['metadata', metadata]] as const) {
    if (r.fileOffset % MiB !== 0 || r.length % MiB !== 0 || r.length === 0) throw ErrCorrupt(`${name} region is not 1 MiB aligned`);
    if (r.fileOffset < HeaderSectionSize || r.fileOffset + r.length > fileSize) throw ErrCorrupt(`${name} region lies outside the file`);
  }
  if (bat.fileOffset < metadata.fileOffset + metadata.length && metadata.fileOffset < bat.fileOffset + bat.length) {
    throw ErrCorrupt('BAT and metadata regions overlap');
  }
  return { bat, metadata };
}
