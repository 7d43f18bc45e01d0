/**
 * The VHDX metadata region (MS-VHDX §2.6): a table of items, the five system items every disk has,
 * and the parent locator of a differencing disk. Every offset and length is checked against the
 * region before it is read; unknown items marked IsRequired are refused.
 */
import { ErrCorrupt, ErrUnsupported } from '../../errors.js';
import { KiB, MaxBlockSize, MaxVirtualSize, MiB, MinBlockSize, readGuid, readU64, writeGuid, writeU64 } from './format.js';

export const MetadataTableSize = 64 * KiB;
export const MaxMetadataEntries = 2047;
/** Items are at most 1 MiB (§2.6.1.2); the parent locator is bounded further below. */
export const MaxMetadataItemLength = MiB;
export const MaxParentLocatorEntries = 64;
const SigMetadata = 'metadata';

export const GuidFileParameters = 'caa16737-fa36-4d43-b3b6-33f0aa44e76b';
export const GuidVirtualDiskSize = '2fa54224-cd1b-4876-b211-5dbed83bf4b8';
export const GuidPage83 = 'beca12ab-b2e6-4523-93ef-c309e000c746';
export const GuidLogicalSectorSize = '8141bf1d-a96f-4709-ba47-f233a8faab5f';
export const GuidPhysicalSectorSize = 'cda348c7-445d-4471-9cc9-e9885251c556';
export const GuidParentLocator = 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c';
export const GuidVhdxParentLocatorType = 'b04aefb7-d19e-4a81-b789-25b8e9445913';

const known = new Set([GuidFileParameters, GuidVirtualDiskSize, GuidPage83, GuidLogicalSectorSize, GuidPhysicalSectorSize, GuidParentLocator]);

export const FlagIsUser = 1;
export const FlagIsVirtualDisk = 2;
export const FlagIsRequired = 4;

export interface MetadataItem {
  guid: string;
  /** Offset relative to the start of the metadata region. */
  offset: number;
  length: number;
  flags: number;
}

export interface VhdxMetadata {
  blockSize: number;
  leaveBlockAllocated: boolean;
  hasParent: boolean;
  virtualSize: number;
  page83: string;
  logicalSectorSize: number;
  physicalSectorSize: number;
  parentLocator: Map<string, string> | undefined;
  /** Where the virtual disk size item lives in the file (resize rewrites it). */
  virtualSizeFileOffset: number;
}

/** Parses the metadata table from the region's bytes (the whole region, bounded by the caller). */
export function parseMetadata(region: Buffer, regionFileOffset: number): VhdxMetadata {
  if (region.length < MetadataTableSize || region.toString('latin1', 0, 8) !== SigMetadata) throw ErrCorrupt('metadata table has a bad signature');
  const count = region.readUInt16LE(10);
  if (count > MaxMetadataEntries) throw ErrCorrupt(`metadata table has ${count} entries (at most ${MaxMetadataEntries})`);
  const items = new Map<string, MetadataItem>();
  for (let i = 0; i < count; i++) {
    const at = 32 + i * 32;
    const item: MetadataItem = { guid: readGuid(region, at), offset: region.readUInt32LE(at + 16), length: region.readUInt32LE(at + 20), flags: region.readUInt32LE(at + 24) };
    if (items.has(item.guid)) throw ErrCorrupt(`metadata item ${item.guid} appears twice`);
    if (item.length > MaxMetadataItemLength) throw ErrCorrupt(`metadata item ${item.guid} is longer than 1 MiB`);
    if (item.length > 0 && (item.offset < MetadataTableSize || item.offset + item.length > region.length)) throw ErrCorrupt(`metadata item ${item.guid} lies outside the metadata region`);
    if (!known.has(item.guid) && (item.flags & FlagIsRequired) !== 0) throw ErrUnsupported(`unknown required metadata item ${item.guid}`);
    items.set(item.guid, item);
  }
  const get = (guid: string, name: string, minLength: number): Buffer => {
    const it = items.get(guid);
    if (!it) throw ErrCorrupt(`metadata has no ${name} item`);
    if (it.length < minLength) throw ErrCorrupt(`metadata ${name} item is too short`);
    return region.subarray(it.offset, it.offset + it.length);
  };
  const fp = get(GuidFileParameters, 'file parameters', 8);
  const blockSize = fp.readUInt32LE(0);
  const fpFlags = fp.readUInt32LE(4);
  if (blockSize < MinBlockSize || blockSize > MaxBlockSize || (blockSize & (blockSize - 1)) !== 0) {
    throw ErrCorrupt(`block size ${blockSize} is not a power of two between 1 MiB and 256 MiB`);
  }
  const virtualSize = readU64(get(GuidVirtualDiskSize, 'virtual disk size', 8), 0);
  const logicalSectorSize = get(GuidLogicalSectorSize, 'logical sector size', 4).readUInt32LE(0);
  const physicalSectorSize = get(GuidPhysicalSectorSize, 'physical sector size', 4).readUInt32LE(0);
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) throw ErrCorrupt(`logical sector size ${logicalSectorSize} is not 512 or 4096`);
  if (physicalSectorSize !== 512 && physicalSectorSize !== 4096) throw ErrCorrupt(`physical sector size ${physicalSectorSize} is not 512 or 4096`);
  if (virtualSize === 0 || virtualSize > MaxVirtualSize || virtualSize % logicalSectorSize !== 0) {
    throw ErrCorrupt(`virtual disk size ${virtualSize} is not a multiple of the sector size up to 64 TiB`);
  }
  const page83Item = items.get(GuidPage83);
  const hasParent = (fpFlags & 2) !== 0;
  const plItem = items.get(GuidParentLocator);
  if (hasParent && !plItem) throw ErrCorrupt('differencing disk has no parent locator');
  return {
    blockSize,
    leaveBlockAllocated: (fpFlags & 1) !== 0,
    hasParent,
    virtualSize,
    page83: page83Item && page83Item.length >= 16 ? readGuid(region, page83Item.offset) : '',
    logicalSectorSize,
    physicalSectorSize,
    parentLocator: hasParent && plItem ? parseParentLocator(region.subarray(plItem.offset, plItem.offset + plItem.length)) : undefined,
    virtualSizeFileOffset: regionFileOffset + items.get(GuidVirtualDiskSize)!.offset,
  };
}

/** Parses a parent locator item (§2.6.2.6): a type GUID and UTF-16LE key/value pairs. */
export function parseParentLocator(item: Buffer): Map<string, string> {
  if (item.length < 20) throw ErrCorrupt('parent locator is too short');
  const type = readGuid(item, 0);
  if (type !== GuidVhdxParentLocatorType) throw ErrUnsupported(`unknown parent locator type ${type}`);
  const count = item.readUInt16LE(18);
  if (count > MaxParentLocatorEntries || 20 + count * 12 > item.length) throw ErrCorrupt(`parent locator has ${count} entries that do not fit`);
  const out = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const at = 20 + i * 12;
    const ko = item.readUInt32LE(at);
    const vo = item.readUInt32LE(at + 4);
    const kl = item.readUInt16LE(at + 8);
    const vl = item.readUInt16LE(at + 10);
    if (kl === 0 || vl === 0 || ko + kl > item.length || vo + vl > item.length) throw ErrCorrupt('parent locator entry lies outside the locator');
    out.set(item.toString('utf16le', ko, ko + kl), item.toString('utf16le', vo, vo + vl));
  }
  return out;
}

export function serializeParentLocator(entries: Map<string, string>): Buffer {
  const head = 20 + entries.size * 12;
  const strings = [...entries].map(([k, v]) => [Buffer.from(k, 'utf16le'), Buffer.from(v, 'utf16le')] as const);
  const total = head + strings.reduce((n, [k, v]) => n + k.length + v.length, 0);
  const b = Buffer.alloc(total);
  writeGuid(b, 0, GuidVhdxParentLocatorType);
  b.writeUInt16LE(entries.size, 18);
  let pos = head;
  strings.forEach(([k, v], i) => {
    const at = 20 + i * 12;
    b.writeUInt32LE(pos, at); k.copy(b, pos); b.writeUInt16LE(k.length, at + 8); pos += k.length;
    b.writeUInt32LE(pos, at + 4); v.copy(b, pos); b.writeUInt16LE(v.length, at + 10); pos += v.length;
  });
  return b;
}

export interface NewMetadata {
  blockSize: number;
  leaveBlockAllocated: boolean;
  virtualSize: number;
  page83: string;
  logicalSectorSize: number;
  physicalSectorSize: number;
  parentLocator?: Map<string, string>;
}

/**
 * Builds a metadata region's contents: the table, then each item on its own 4 KiB-aligned slot
 * from 64 KiB on (as Hyper-V and qemu lay it out). Returns the bytes to write at the region start.
 */
export function serializeMetadata(m: NewMetadata): Buffer {
  const fp = Buffer.alloc(8);
  fp.writeUInt32LE(m.blockSize, 0);
  fp.writeUInt32LE((m.leaveBlockAllocated ? 1 : 0) | (m.parentLocator ? 2 : 0), 4);
  const vs = Buffer.alloc(8);
  writeU64(vs, 0, m.virtualSize);
  const p83 = Buffer.alloc(16);
  writeGuid(p83, 0, m.page83);
  const ls = Buffer.alloc(4);
  ls.writeUInt32LE(m.logicalSectorSize, 0);
  const ps = Buffer.alloc(4);
  ps.writeUInt32LE(m.physicalSectorSize, 0);
  const items: [string, Buffer, number][] = [
    [GuidFileParameters, fp, FlagIsRequired],
    [GuidVirtualDiskSize, vs, FlagIsRequired | FlagIsVirtualDisk],
    [GuidPage83, p83, FlagIsRequired | FlagIsVirtualDisk],
    [GuidLogicalSectorSize, ls, FlagIsRequired | FlagIsVirtualDisk],
    [GuidPhysicalSectorSize, ps, FlagIsRequired | FlagIsVirtualDisk],
  ];
  if (m.parentLocator) items.push([GuidParentLocator, serializeParentLocator(m.parentLocator), FlagIsRequired]);
  const slots = items.map(([, data]) => Math.ceil(data.length / (4 * KiB)) * 4 * KiB);
  const out = Buffer.alloc(MetadataTableSize + slots.reduce((a, b) => a + b, 0));
  out.write(SigMetadata, 0, 'latin1');
  out.writeUInt16LE(items.length, 10);
  let pos = MetadataTableSize;
  items.forEach(([guid, data, flags], i) => {
    const at = 32 + i * 32;
    writeGuid(out, at, guid);
    out.writeUInt32LE(pos, at + 16);
    out.writeUInt32LE(data.length, at + 20);
    out.writeUInt32LE(flags, at + 24);
    data.copy(out, pos);
    pos += slots[i]!;
  });
  return out;
}
