/**
 * The VHDX log (MS-VHDX §2.3): a circular buffer of 4 KiB sectors holding entries, each a header,
 * descriptors (data or zero) and data sectors, checksummed with CRC-32C as a whole. This file
 * finds the active sequence of a log, turns it into the writes to replay, and builds new entries.
 */
import { crc32c } from '@node-rs/crc32';
import { ErrCorrupt } from '../../errors.js';
import { checksumWithHole, GiB, readGuid, readU64, writeGuid, writeU64 } from './format.js';

export const LogSector = 4096;
const EntryHeaderSize = 64;
const DescriptorSize = 32;
/** Bound on how far a replayed entry may grow the file beyond its current size. */
const MaxLogGrowth = 64 * GiB;

export interface LogWrite {
  at: number;
  length: number;
  /** One 4 KiB sector of data; undefined for a zero descriptor. */
  data: Buffer | undefined;
}

interface Entry {
  pos: number;
  length: number;
  seq: bigint;
  tail: number;
  flushedFileOffset: number;
  lastFileOffset: number;
  writes: LogWrite[];
}

/** Sectors holding the header and count descriptors (header + 126 in the first, 128 after). */
export function descriptorSectors(count: number): number {
  return Math.ceil((EntryHeaderSize + count * DescriptorSize) / LogSector);
}

/** Parses and fully validates the entry at pos of the log, or returns undefined. */
function parseEntry(log: Buffer, pos: number, logGuid: string): Entry | undefined {
  const sector = (k: number) => {
    const at = (pos + k * LogSector) % log.length;
    return log.subarray(at, at + LogSector);
  };
  const first = sector(0);
  if (first.toString('latin1', 0, 4) !== 'loge') return undefined;
  const length = first.readUInt32LE(8);
  const count = first.readUInt32LE(24);
  const seq = first.readBigUInt64LE(16);
  if (length === 0 || length % LogSector !== 0 || length > log.length || seq === 0n) return undefined;
  if (readGuid(first, 32) !== logGuid) return undefined;
  const sectors = length / LogSector;
  const descSectors = descriptorSectors(count);
  if (descSectors > sectors) return undefined;
  // The checksum covers the whole entry with its checksum field as zero.
  let crc = checksumWithHole(first, 4);
  for (let k = 1; k < sectors; k++) crc = crc32c(sector(k), crc);
  if (crc !== first.readUInt32LE(4)) return undefined;
  const writes: LogWrite[] = [];
  let dataSector = descSectors;
  for (let i = 0; i < count; i++) {
    const off = EntryHeaderSize + i * DescriptorSize;
    const d = sector(Math.floor(off / LogSector)).subarray(off % LogSector, off % LogSector + DescriptorSize);
    const sig = d.toString('latin1', 0, 4);
    const fileOffset = readU64(d, 16);
    if (d.readBigUInt64LE(24) !== seq || fileOffset % LogSector !== 0) return undefined;
    if (sig === 'zero') {
      const zeroLength = readU64(d, 8);
      if (zeroLength % LogSector !== 0) return undefined;
      writes.push({ at: fileOffset, length: zeroLength, data: undefined });
    } else if (sig === 'desc') {
      if (dataSector >= sectors) return undefined;
      const s = sector(dataSector++);
      if (s.toString('latin1', 0, 4) !== 'data') return undefined;
      if ((BigInt(s.readUInt32LE(4)) << 32n | BigInt(s.readUInt32LE(4092))) !== seq) return undefined;
      const data = Buffer.allocUnsafe(LogSector);
      d.copy(data, 0, 8, 16);
      s.copy(data, 8, 8, 4092);
      d.copy(data, 4092, 4, 8);
      writes.push({ at: fileOffset, length: LogSector, data });
    } else {
      return undefined;
    }
  }
  return { pos, length, seq, tail: first.readUInt32LE(12), flushedFileOffset: readU64(first, 48), lastFileOffset: readU64(first, 56), writes };
}

export interface Replay {
  writes: LogWrite[];
  /** The file must be at least this long after replay (LastFileOffset of the head entry). */
  lastFileOffset: number;
  headSequence: bigint;
}

/**
 * Finds the active sequence (§2.3.3): among runs of valid entries with consecutive sequence
 * numbers, the one whose head has the highest sequence number and whose head's tail points into
 * the run. Returns the writes from the tail entry to the head in order, or undefined when the log
 * holds nothing to replay.
 */
export function findReplay(log: Buffer, logGuid: string, fileSize: number): Replay | undefined {
  const cache = new Map<number, Entry | undefined>();
  const entryAt = (pos: number) => {
    if (!cache.has(pos)) cache.set(pos, parseEntry(log, pos, logGuid));
    return cache.get(pos);
  };
  let best: Entry[] | undefined;
  // An entry already walked as part of a run starts only a suffix of that run, with the same head and
  // the same answer: skipping it keeps the search linear in the log's sectors (a log of 65,536 valid
  // one-sector entries took minutes when every sector started a walk of its own).
  const walked = new Set<number>();
  for (let start = 0; start < log.length; start += LogSector) {
    if (walked.has(start)) continue;
    const run: Entry[] = [];
    let e = entryAt(start);
    while (e && run.length * LogSector < log.length) {
      run.push(e);
      walked.add(e.pos);
      const next = entryAt((e.pos + e.length) % log.length);
      if (!next || next.seq !== e.seq + 1n) break;
      e = next;
    }
    const head = run.at(-1);
    if (!head) continue;
    const tailIndex = run.findIndex((x) => x.pos === head.tail);
    if (tailIndex < 0) continue;
    if (!best || head.seq > best.at(-1)!.seq) best = run.slice(tailIndex);
  }
  if (!best) return undefined;
  const head = best.at(-1)!;
  for (const e of best) {
    if (e.flushedFileOffset > fileSize) throw ErrCorrupt(`log entry ${e.seq} expects a file of ${e.flushedFileOffset} bytes; the file was truncated`);
  }
  const limit = Math.max(fileSize, head.lastFileOffset);
  if (head.lastFileOffset > fileSize + MaxLogGrowth) throw ErrCorrupt('log entry grows the file beyond any plausible size');
  const writes = best.flatMap((e) => e.writes);
  for (const w of writes) {
    if (w.at + w.length > limit) throw ErrCorrupt(`log descriptor writes beyond the file (offset ${w.at})`);
  }
  return { writes, lastFileOffset: head.lastFileOffset, headSequence: head.seq };
}

/**
 * Builds one log entry holding data writes (each 4 KiB aligned, a multiple of 4 KiB long) and zero
 * ranges (likewise aligned). Its tail is opts.tail, by default its own position (a complete
 * sequence of one entry).
 */
export function buildEntry(
  writes: { at: number; data: Buffer }[],
  opts: { pos: number; seq: bigint; logGuid: string; fileSize: number; tail?: number; zeros?: { at: number; length: number }[] },
): Buffer {
  const sectors = writes.flatMap((w) => {
    const out: { at: number; data: Buffer }[] = [];
    for (let i = 0; i < w.data.length; i += LogSector) out.push({ at: w.at + i, data: w.data.subarray(i, i + LogSector) });
    return out;
  });
  const zeros = opts.zeros ?? [];
  const count = sectors.length + zeros.length;
  const descSectors = descriptorSectors(count);
  const entry = Buffer.alloc((descSectors + sectors.length) * LogSector);
  entry.write('loge', 0, 'latin1');
  entry.writeUInt32LE(entry.length, 8);
  entry.writeUInt32LE(opts.tail ?? opts.pos, 12);
  entry.writeBigUInt64LE(opts.seq, 16);
  entry.writeUInt32LE(count, 24);
  writeGuid(entry, 32, opts.logGuid);
  writeU64(entry, 48, opts.fileSize);
  writeU64(entry, 56, opts.fileSize);
  sectors.forEach((s, i) => {
    const d = EntryHeaderSize + i * DescriptorSize;
    entry.write('desc', d, 'latin1');
    s.data.copy(entry, d + 4, 4092, 4096);
    s.data.copy(entry, d + 8, 0, 8);
    writeU64(entry, d + 16, s.at);
    entry.writeBigUInt64LE(opts.seq, d + 24);
    const ds = (descSectors + i) * LogSector;
    entry.write('data', ds, 'latin1');
    entry.writeUInt32LE(Number(opts.seq >> 32n), ds + 4);
    s.data.copy(entry, ds + 8, 8, 4092);
    entry.writeUInt32LE(Number(opts.seq & 0xffffffffn), ds + 4092);
  });
  zeros.forEach((z, i) => {
    const d = EntryHeaderSize + (sectors.length + i) * DescriptorSize;
    entry.write('zero', d, 'latin1');
    writeU64(entry, d + 8, z.length);
    writeU64(entry, d + 16, z.at);
    entry.writeBigUInt64LE(opts.seq, d + 24);
  });
  entry.writeUInt32LE(checksumWithHole(entry, 4), 4);
  return entry;
}
