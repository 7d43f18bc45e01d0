/**
 * The `.hrl` header (docs/formats/hrl.md, "Header"): the log's identity and how it is encoded.
 * Encoding and decoding live together so the two can never drift apart. Version 2 adds the VM-wide
 * cycle id and the agent's capture time; a header without a cycle is written as version 1, and both
 * versions are read.
 */
import { ErrCorrupt, ErrInvalidArgument, ErrUnsupported } from '../errors.js';

export const LogMagic = Buffer.from([0x4c, 0x42, 0x48, 0x52, 0x4c, 0x00, 0x0d, 0x0a]);
/** The version writers write (version 1, without a cycle, is still read). */
export const LogFormatVersion = 2;
export const LogFormatVersions: readonly number[] = [1, 2];
/** Header bytes before the three ids, per version. */
const FixedBytes: Record<number, number> = { 1: 52, 2: 68 };
/** Header bytes with three empty ids (their length fields only), per version. */
const MinBytes = (version: number) => FixedBytes[version]! + 6;
/** The smallest header of any version. */
export const MinHeaderBytes = MinBytes(1);
export const MaxHeaderBytes = 1024;
export const MaxIdBytes = 128;
export const DefaultChunkShift = 20;
export const MinChunkShift = 16;
export const MaxChunkShift = 24;

const idPattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export type Consistency = 'crash' | 'application';
export type Compression = 'none' | 'zstd' | 'lz4';
/** incremental: an ordinary cycle; full / delta: the base that starts a generation. */
export type LogKind = 'incremental' | 'full' | 'delta';

export const Consistencies: readonly Consistency[] = ['crash', 'application'];
export const Compressions: readonly Compression[] = ['none', 'zstd', 'lz4'];
export const LogKinds: readonly LogKind[] = ['incremental', 'full', 'delta'];

export interface LogHeader {
  tenant: string;
  vm: string;
  disk: string;
  generation: number;
  sequence: number;
  /** The disk's virtual size in bytes when the log was closed. */
  virtualSize: number;
  consistency: Consistency;
  /** When the log was closed, in milliseconds since the epoch. */
  createdMs: number;
  compression: Compression;
  kind: LogKind;
  /** Raw bytes per data chunk, 64 KiB to 16 MiB, a power of two. */
  chunkSize: number;
  /**
   * Version 2: the VM-wide cycle id (1 to 2^53-1, monotonic per VM across all its disks) shared by
   * every disk's log of one agent cycle. Absent in a version-1 log.
   */
  cycle?: number;
  /** Version 2: when the agent took the cycle's view of the disks (ms since the epoch), before reading. */
  capturedMs?: number;
}

/** The header's bytes; throws `invalid_argument` for a field out of its range. */
export function encodeLogHeader(h: LogHeader): Buffer {
  const ids = [checkId('tenant', h.tenant), checkId('vm', h.vm), checkId('disk', h.disk)];
  for (const [name, v] of [['generation', h.generation], ['sequence', h.sequence], ['created', h.createdMs]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw ErrInvalidArgument(`log ${name} ${v} is not an integer from 0 to 2^53-1`);
  }
  const version = h.cycle === undefined ? 1 : 2;
  if (version === 1 && h.capturedMs !== undefined) throw ErrInvalidArgument('log capture time given without a cycle');
  if (version === 2) {
    if (!Number.isSafeInteger(h.cycle) || h.cycle! < 1) throw ErrInvalidArgument(`log cycle ${h.cycle} is not an integer from 1 to 2^53-1`);
    if (!Number.isSafeInteger(h.capturedMs) || h.capturedMs! < 0) throw ErrInvalidArgument(`log capture time ${h.capturedMs} is not an integer from 0 to 2^53-1`);
  }
  if (!Number.isSafeInteger(h.virtualSize) || h.virtualSize < 1) throw ErrInvalidArgument(`log virtual size ${h.virtualSize} is not an integer from 1 to 2^53-1`);
  const shift = Math.log2(h.chunkSize);
  if (!Number.isInteger(shift) || shift < MinChunkShift || shift > MaxChunkShift) throw ErrInvalidArgument(`log chunk size ${h.chunkSize} is not a power of two from 64 KiB to 16 MiB`);
  const buf = Buffer.alloc(MinBytes(version) + ids.reduce((n, id) => n + id.length, 0));
  LogMagic.copy(buf, 0);
  buf.writeUInt16LE(version, 8);
  buf.writeUInt16LE(buf.length, 10);
  buf.writeBigUInt64LE(BigInt(h.generation), 12);
  buf.writeBigUInt64LE(BigInt(h.sequence), 20);
  buf.writeBigUInt64LE(BigInt(h.virtualSize), 28);
  buf.writeBigUInt64LE(BigInt(h.createdMs), 36);
  buf[44] = enumIndex(Consistencies, h.consistency, 'consistency');
  buf[45] = enumIndex(Compressions, h.compression, 'compression');
  buf[46] = enumIndex(LogKinds, h.kind, 'kind');
  buf[47] = shift;
  if (version === 2) {
    buf.writeBigUInt64LE(BigInt(h.cycle!), 52);
    buf.writeBigUInt64LE(BigInt(h.capturedMs!), 60);
  }
  let at = FixedBytes[version]!;
  for (const id of ids) {
    buf.writeUInt16LE(id.length, at);
    id.copy(buf, at + 2);
    at += 2 + id.length;
  }
  return buf;
}

/** Header length from its first 12 bytes, checking magic and version first; bounded. */
export function headerLength(first12: Buffer): number {
  if (first12.length < LogMagic.length || !first12.subarray(0, LogMagic.length).equals(LogMagic)) throw ErrCorrupt('not a change log (no .hrl magic)');
  if (first12.length < 12) throw ErrCorrupt('truncated: the log ends inside its header');
  const version = first12.readUInt16LE(8);
  if (!LogFormatVersions.includes(version)) throw ErrUnsupported(`change log version ${version} is not supported (this reader knows ${LogFormatVersions.join(' and ')})`);
  const length = first12.readUInt16LE(10);
  if (length < MinBytes(version) || length > MaxHeaderBytes) throw ErrCorrupt(`log header length ${length} is not ${MinBytes(version)} to ${MaxHeaderBytes}`);
  return length;
}

/** Decodes a whole header (its length already bounded by headerLength). */
export function decodeLogHeader(buf: Buffer): LogHeader {
  const length = headerLength(buf);
  const version = buf.readUInt16LE(8);
  if (buf.length !== length) throw ErrCorrupt(`truncated: the log ends inside its header`);
  if (buf.readUInt32LE(48) !== 0) throw ErrUnsupported('log header reserved field is not zero');
  const shift = buf[47]!;
  if (shift < MinChunkShift || shift > MaxChunkShift) throw ErrCorrupt(`log chunk shift ${shift} is not ${MinChunkShift} to ${MaxChunkShift}`);
  let at = FixedBytes[version]!;
  const ids: string[] = [];
  for (const name of ['tenant', 'vm', 'disk']) {
    const n = at + 2 <= length ? buf.readUInt16LE(at) : -1;
    if (n < 1 || n > MaxIdBytes || at + 2 + n > length) throw ErrCorrupt(`log ${name} id length is out of bounds`);
    const id = buf.toString('latin1', at + 2, at + 2 + n);
    if (!idPattern.test(id)) throw ErrCorrupt(`log ${name} id is not [A-Za-z0-9._-]`);
    ids.push(id);
    at += 2 + n;
  }
  if (at !== length) throw ErrCorrupt(`log header length ${length} does not match its ids (${at} bytes)`);
  const header: LogHeader = {
    tenant: ids[0]!, vm: ids[1]!, disk: ids[2]!,
    generation: readSafe(buf, 12, 'generation'),
    sequence: readSafe(buf, 20, 'sequence'),
    virtualSize: readSafe(buf, 28, 'virtual size'),
    createdMs: readSafe(buf, 36, 'created time'),
    consistency: enumValue(Consistencies, buf[44]!, 'consistency'),
    compression: enumValue(Compressions, buf[45]!, 'compression'),
    kind: enumValue(LogKinds, buf[46]!, 'kind'),
    chunkSize: 2 ** shift,
  };
  if (header.virtualSize < 1) throw ErrCorrupt('log virtual size is 0');
  if (version === 2) {
    header.cycle = readSafe(buf, 52, 'cycle');
    header.capturedMs = readSafe(buf, 60, 'capture time');
    if (header.cycle < 1) throw ErrCorrupt('log cycle is 0');
  }
  return header;
}

/** A u64 that must fit a JavaScript safe integer. */
export function readSafe(buf: Buffer, at: number, what: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw ErrCorrupt(`log ${what} ${v} exceeds 2^53-1`);
  return Number(v);
}

function checkId(name: string, id: string): Buffer {
  if (typeof id !== 'string' || id.length < 1 || id.length > MaxIdBytes || !idPattern.test(id)) {
    throw ErrInvalidArgument(`log ${name} id ${JSON.stringify(String(id).slice(0, 40))} is not 1 to ${MaxIdBytes} of [A-Za-z0-9._-] starting with a letter or digit`);
  }
  return Buffer.from(id, 'latin1');
}

function enumIndex<T>(values: readonly T[], v: T, what: string): number {
  const i = values.indexOf(v);
  if (i < 0) throw ErrInvalidArgument(`log ${what} ${String(v)} is not one of ${values.join(', ')}`);
  return i;
}

function enumValue<T>(values: readonly T[], i: number, what: string): T {
  const v = values[i];
  if (v === undefined) throw ErrUnsupported(`log ${what} ${i} is not supported`);
  return v;
}
