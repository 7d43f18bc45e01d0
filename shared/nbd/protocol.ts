/**
 * The NBD protocol's constants and messages (docs/formats/nbd.md; the NetworkBlockDevice/nbd
 * doc/proto.md it follows), as pure encode/decode functions for both directions: our server
 * (service/failover/nbd) and a client (the agent's live-VM source) speak through this one module.
 *
 * Input: Buffers and plain values. Output: Buffers, or decoded plain objects. Failure: a decoder given
 * bytes that break the spec (bad magic, a length that does not fit) throws NbdProtocolError; its
 * caller ends the connection (a hard disconnect, as the spec allows for a broken MUST). Every field is
 * big-endian. Names are spelled as the spec spells them.
 */

// --- Magic numbers -------------------------------------------------------------------------------

/** 'NBDMAGIC': the first 8 bytes a server sends. */
export const NBDMAGIC = 0x4e42444d41474943n;
/** 'IHAVEOPT': newstyle negotiation's magic, also the prefix of every option a client sends. */
export const IHAVEOPT = 0x49484156454f5054n;
/** Prefix of every option reply (fixed newstyle). */
export const NBD_OPT_REPLY_MAGIC = 0x3e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// --- Handshake phase flags -------------------------------------------------------------------------

/** Handshake flags (16 bits, server). */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
/** Client flags (32 bits). */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

/** Transmission flags (16 bits, per export). */
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// --- Options and their replies -----------------------------------------------------------------

export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_PEEK_EXPORT = 4;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
/** Error replies have bit 31 set. */
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;
export const NBD_REP_ERR_EXT_HEADER_REQD = NBD_REP_FLAG_ERROR + 10;

/** Information types inside NBD_REP_INFO (and requested by NBD_OPT_INFO / NBD_OPT_GO). */
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// --- Transmission phase ------------------------------------------------------------------------

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;
export const NBD_CMD_RESIZE = 8;

/** Command flags (16 bits). */
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

/** Structured reply flags (16 bits). */
export const NBD_REPLY_FLAG_DONE = 1 << 0;

/** Structured reply chunk types; error chunks have bit 15 set. */
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_FLAG_ERROR = 1 << 15;
export const NBD_REPLY_TYPE_ERROR = NBD_REPLY_TYPE_FLAG_ERROR + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = NBD_REPLY_TYPE_FLAG_ERROR + 2;

/** base:allocation status flags. */
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;
export const BaseAllocation = 'base:allocation';

/** Error values of simple replies and error chunks. */
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

// --- Sizes -------------------------------------------------------------------------------------

/** Strings (export names, messages, context names) MUST be no longer than this. */
export const MaxStringBytes = 4096;
export const GreetingBytes = 18;
export const ClientFlagsBytes = 4;
export const OptionHeaderBytes = 16;
export const OptionReplyHeaderBytes = 20;
/** The reply to NBD_OPT_EXPORT_NAME without the 124 zero bytes. */
export const ExportNameReplyBytes = 10;
export const ExportNameReplyPadding = 124;
export const RequestBytes = 28;
export const SimpleReplyBytes = 16;
export const StructuredReplyBytes = 20;

/** Bytes that break the protocol: the connection cannot go on. */
export class NbdProtocolError extends Error {
  override name = 'NbdProtocolError';
}

const fail = (message: string): never => { throw new NbdProtocolError(message); };
const need = (buf: Buffer, bytes: number, what: string) => {
  if (buf.length < bytes) fail(`${what}: ${buf.length} bytes, expected ${bytes}`);
};

/** Reads a 64-bit unsigned field as a number; values above 2^53 come back as Infinity (out of any range). */
function readU64(buf: Buffer, at: number): number {
  const hi = buf.readUInt32BE(at);
  const lo = buf.readUInt32BE(at + 4);
  return hi >= 0x200000 ? Infinity : hi * 0x100000000 + lo;
}
function writeU64(buf: Buffer, value: number, at: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`not a 64-bit unsigned offset: ${value}`);
  buf.writeUInt32BE(Math.floor(value / 0x100000000), at);
  buf.writeUInt32BE(value % 0x100000000, at + 4);
}
function utf8(bytes: Buffer, what: string): string {
  if (bytes.length > MaxStringBytes) fail(`${what}: ${bytes.length} bytes, longer than ${MaxStringBytes}`);
  const s = bytes.toString('utf8');
  if (s.includes('\0') || s.includes('\uFFFD')) fail(`${what}: not a valid NBD string`);
  return s;
}
function stringBytes(s: string, what: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length > MaxStringBytes || s.includes('\0')) throw new RangeError(`${what}: not a valid NBD string`);
  return b;
}

// --- Handshake ---------------------------------------------------------------------------------

/** S: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.alloc(GreetingBytes);
  b.writeBigUInt64BE(NBDMAGIC, 0);
  b.writeBigUInt64BE(IHAVEOPT, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}
export function decodeGreeting(buf: Buffer): { handshakeFlags: number } {
  need(buf, GreetingBytes, 'greeting');
  if (buf.readBigUInt64BE(0) !== NBDMAGIC) fail('greeting: not NBDMAGIC');
  if (buf.readBigUInt64BE(8) !== IHAVEOPT) fail('greeting: not a newstyle server (IHAVEOPT expected)');
  return { handshakeFlags: buf.readUInt16BE(16) };
}

/** C: client flags. */
export function encodeClientFlags(flags: number): Buffer {
  const b = Buffer.alloc(ClientFlagsBytes);
  b.writeUInt32BE(flags >>> 0, 0);
  return b;
}
export function decodeClientFlags(buf: Buffer): number {
  need(buf, ClientFlagsBytes, 'client flags');
  return buf.readUInt32BE(0);
}

/** C: IHAVEOPT, option, length, data. */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(OptionHeaderBytes + data.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, OptionHeaderBytes);
  return b;
}
export interface OptionHeader { option: number; length: number }
export function decodeOptionHeader(buf: Buffer): OptionHeader {
  need(buf, OptionHeaderBytes, 'option header');
  if (buf.readBigUInt64BE(0) !== IHAVEOPT) fail('option: not IHAVEOPT');
  return { option: buf.readUInt32BE(8), length: buf.readUInt32BE(12) };
}

/** S: reply magic, option, reply type, length, data. */
export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(OptionReplyHeaderBytes + data.length);
  b.writeBigUInt64BE(NBD_OPT_REPLY_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, OptionReplyHeaderBytes);
  return b;
}
export interface OptionReplyHeader { option: number; type: number; length: number }
export function decodeOptionReplyHeader(buf: Buffer): OptionReplyHeader {
  need(buf, OptionReplyHeaderBytes, 'option reply header');
  if (buf.readBigUInt64BE(0) !== NBD_OPT_REPLY_MAGIC) fail('option reply: bad magic');
  return { option: buf.readUInt32BE(8), type: buf.readUInt32BE(12), length: buf.readUInt32BE(16) };
}
export const isOptionError = (type: number) => type >= NBD_REP_FLAG_ERROR;

/** An error reply's data: a message for a human (may be empty). */
export function encodeOptionError(option: number, type: number, message = ''): Buffer {
  return encodeOptionReply(option, type, stringBytes(message, 'message'));
}

/** S: the reply to NBD_OPT_EXPORT_NAME: size, transmission flags, 124 zeros unless NO_ZEROES. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(ExportNameReplyBytes + (noZeroes ? 0 : ExportNameReplyPadding));
  writeU64(b, size, 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}
export function decodeExportNameReply(buf: Buffer): { size: number; transmissionFlags: number } {
  need(buf, ExportNameReplyBytes, 'export name reply');
  return { size: readU64(buf, 0), transmissionFlags: buf.readUInt16BE(8) };
}

/** NBD_OPT_INFO / NBD_OPT_GO data: the export name and the information requested. */
export interface InfoRequest { name: string; requests: number[] }
export function encodeInfoRequest(req: InfoRequest): Buffer {
  const name = stringBytes(req.name, 'export name');
  const b = Buffer.alloc(4 + name.length + 2 + 2 * req.requests.length);
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  b.writeUInt16BE(req.requests.length, 4 + name.length);
  req.requests.forEach((r, i) => b.writeUInt16BE(r, 6 + name.length + 2 * i));
  return b;
}
export function decodeInfoRequest(data: Buffer): InfoRequest {
  if (data.length < 6) fail('NBD_OPT_INFO/GO: shorter than 6 bytes');
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) fail('NBD_OPT_INFO/GO: name longer than the option');
  const name = utf8(data.subarray(4, 4 + nameLength), 'export name');
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 6 + nameLength + 2 * count) fail('NBD_OPT_INFO/GO: request count does not match the length');
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(data.readUInt16BE(6 + nameLength + 2 * i));
  return { name, requests };
}

/** NBD_REP_INFO data, by information type. */
export type Info =
  | { type: typeof NBD_INFO_EXPORT; size: number; transmissionFlags: number }
  | { type: typeof NBD_INFO_NAME; name: string }
  | { type: typeof NBD_INFO_DESCRIPTION; description: string }
  | { type: typeof NBD_INFO_BLOCK_SIZE; minimum: number; preferred: number; maximum: number }
  | { type: 'unknown'; code: number; data: Buffer };
export function encodeInfo(info: Exclude<Info, { type: 'unknown' }>): Buffer {
  switch (info.type) {
    case NBD_INFO_EXPORT: {
      const b = Buffer.alloc(12);
      b.writeUInt16BE(NBD_INFO_EXPORT, 0);
      writeU64(b, info.size, 2);
      b.writeUInt16BE(info.transmissionFlags, 10);
      return b;
    }
    case NBD_INFO_NAME:
    case NBD_INFO_DESCRIPTION: {
      const s = stringBytes(info.type === NBD_INFO_NAME ? info.name : info.description, 'info string');
      const b = Buffer.alloc(2 + s.length);
      b.writeUInt16BE(info.type, 0);
      s.copy(b, 2);
      return b;
    }
    case NBD_INFO_BLOCK_SIZE: {
      const b = Buffer.alloc(14);
      b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
      b.writeUInt32BE(info.minimum, 2);
      b.writeUInt32BE(info.preferred, 6);
      b.writeUInt32BE(info.maximum >>> 0, 10);
      return b;
    }
  }
}
export function decodeInfo(data: Buffer): Info {
  if (data.length < 2) fail('NBD_REP_INFO: shorter than 2 bytes');
  const code = data.readUInt16BE(0);
  switch (code) {
    case NBD_INFO_EXPORT:
      if (data.length !== 12) fail('NBD_INFO_EXPORT: length is not 12');
      return { type: NBD_INFO_EXPORT, size: readU64(data, 2), transmissionFlags: data.readUInt16BE(10) };
    case NBD_INFO_NAME:
      return { type: NBD_INFO_NAME, name: utf8(data.subarray(2), 'NBD_INFO_NAME') };
    case NBD_INFO_DESCRIPTION:
      return { type: NBD_INFO_DESCRIPTION, description: utf8(data.subarray(2), 'NBD_INFO_DESCRIPTION') };
    case NBD_INFO_BLOCK_SIZE:
      if (data.length !== 14) fail('NBD_INFO_BLOCK_SIZE: length is not 14');
      return { type: NBD_INFO_BLOCK_SIZE, minimum: data.readUInt32BE(2), preferred: data.readUInt32BE(6), maximum: data.readUInt32BE(10) };
    default:
      return { type: 'unknown', code, data: data.subarray(2) };
  }
}

/** NBD_REP_SERVER data (a reply to NBD_OPT_LIST): the export name and an optional description. */
export function encodeServer(name: string, description = ''): Buffer {
  const n = stringBytes(name, 'export name');
  const d = stringBytes(description, 'description');
  const b = Buffer.alloc(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}
export function decodeServer(data: Buffer): { name: string; description: string } {
  if (data.length < 4) fail('NBD_REP_SERVER: shorter than 4 bytes');
  const n = data.readUInt32BE(0);
  if (n > data.length - 4) fail('NBD_REP_SERVER: name longer than the reply');
  return { name: utf8(data.subarray(4, 4 + n), 'export name'), description: utf8(data.subarray(4 + n), 'description') };
}

/** NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data. */
export interface MetaContextRequest { name: string; queries: string[] }
export function encodeMetaContextRequest(req: MetaContextRequest): Buffer {
  const parts = [stringBytes(req.name, 'export name'), ...req.queries.map((q) => stringBytes(q, 'query'))];
  const b = Buffer.alloc(4 + parts.reduce((s, p) => s + 4 + p.length, 0));
  let at = 0;
  parts.forEach((p, i) => {
    b.writeUInt32BE(p.length, at);
    p.copy(b, at + 4);
    at += 4 + p.length;
    if (i === 0) { b.writeUInt32BE(req.queries.length, at); at += 4; }
  });
  return b;
}
export function decodeMetaContextRequest(data: Buffer): MetaContextRequest {
  let at = 0;
  const str = (what: string): string => {
    if (data.length - at < 4) fail(`meta context: ${what} length past the option`);
    const n = data.readUInt32BE(at);
    if (n > data.length - at - 4) fail(`meta context: ${what} longer than the option`);
    const s = utf8(data.subarray(at + 4, at + 4 + n), what);
    at += 4 + n;
    return s;
  };
  const name = str('export name');
  if (data.length - at < 4) fail('meta context: no query count');
  const count = data.readUInt32BE(at);
  at += 4;
  // Each query takes at least 4 bytes: a count beyond that cannot be honest.
  if (count > (data.length - at) / 4) fail('meta context: more queries than the option holds');
  const queries: string[] = [];
  for (let i = 0; i < count; i++) queries.push(str('query'));
  if (at !== data.length) fail('meta context: bytes after the last query');
  return { name, queries };
}

/** NBD_REP_META_CONTEXT data: a context id and its name. */
export function encodeMetaContext(id: number, name: string): Buffer {
  const n = stringBytes(name, 'context name');
  const b = Buffer.alloc(4 + n.length);
  b.writeUInt32BE(id >>> 0, 0);
  n.copy(b, 4);
  return b;
}
export function decodeMetaContext(data: Buffer): { id: number; name: string } {
  if (data.length < 4) fail('NBD_REP_META_CONTEXT: shorter than 4 bytes');
  return { id: data.readUInt32BE(0), name: utf8(data.subarray(4), 'context name') };
}

// --- Transmission ------------------------------------------------------------------------------

/** A request header; a WRITE's length bytes of data follow it on the wire. */
export interface Request { flags: number; type: number; cookie: bigint; offset: number; length: number }
export function encodeRequest(req: Request, into: Buffer = Buffer.alloc(RequestBytes), at = 0): Buffer {
  into.writeUInt32BE(NBD_REQUEST_MAGIC, at);
  into.writeUInt16BE(req.flags, at + 4);
  into.writeUInt16BE(req.type, at + 6);
  into.writeBigUInt64BE(req.cookie, at + 8);
  writeU64(into, req.offset, at + 16);
  into.writeUInt32BE(req.length, at + 24);
  return into;
}
/** Offsets above 2^53 decode as Infinity: beyond any export, so refused by a range check. */
export function decodeRequest(buf: Buffer, at = 0): Request {
  need(buf, at + RequestBytes, 'request');
  if (buf.readUInt32BE(at) !== NBD_REQUEST_MAGIC) fail('request: bad magic');
  return {
    flags: buf.readUInt16BE(at + 4),
    type: buf.readUInt16BE(at + 6),
    cookie: buf.readBigUInt64BE(at + 8),
    offset: readU64(buf, at + 16),
    length: buf.readUInt32BE(at + 24),
  };
}

/** A simple reply header; a successful READ's data follows it. */
export interface SimpleReply { error: number; cookie: bigint }
export function encodeSimpleReply(reply: SimpleReply, into: Buffer = Buffer.alloc(SimpleReplyBytes), at = 0): Buffer {
  into.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, at);
  into.writeUInt32BE(reply.error, at + 4);
  into.writeBigUInt64BE(reply.cookie, at + 8);
  return into;
}
export function decodeSimpleReply(buf: Buffer, at = 0): SimpleReply {
  need(buf, at + SimpleReplyBytes, 'simple reply');
  if (buf.readUInt32BE(at) !== NBD_SIMPLE_REPLY_MAGIC) fail('simple reply: bad magic');
  return { error: buf.readUInt32BE(at + 4), cookie: buf.readBigUInt64BE(at + 8) };
}

/** A structured reply chunk header; length bytes of payload follow it. */
export interface ChunkHeader { flags: number; type: number; cookie: bigint; length: number }
export function encodeChunkHeader(chunk: ChunkHeader, into: Buffer = Buffer.alloc(StructuredReplyBytes), at = 0): Buffer {
  into.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, at);
  into.writeUInt16BE(chunk.flags, at + 4);
  into.writeUInt16BE(chunk.type, at + 6);
  into.writeBigUInt64BE(chunk.cookie, at + 8);
  into.writeUInt32BE(chunk.length, at + 16);
  return into;
}
export function decodeChunkHeader(buf: Buffer, at = 0): ChunkHeader {
  need(buf, at + StructuredReplyBytes, 'structured reply');
  if (buf.readUInt32BE(at) !== NBD_STRUCTURED_REPLY_MAGIC) fail('structured reply: bad magic');
  return { flags: buf.readUInt16BE(at + 4), type: buf.readUInt16BE(at + 6), cookie: buf.readBigUInt64BE(at + 8), length: buf.readUInt32BE(at + 16) };
}
/** The first 4 bytes of either reply tell which it is. */
export function replyKind(magic: number): 'simple' | 'structured' | undefined {
  return magic === NBD_SIMPLE_REPLY_MAGIC ? 'simple' : magic === NBD_STRUCTURED_REPLY_MAGIC ? 'structured' : undefined;
}

/**
 * The header and payload prefix of an NBD_REPLY_TYPE_OFFSET_DATA chunk carrying dataLength bytes
 * (28 bytes); the data itself follows, written by the caller from its own buffer.
 */
export const OffsetDataHeaderBytes = StructuredReplyBytes + 8;
export function encodeOffsetDataHeader(cookie: bigint, flags: number, offset: number, dataLength: number, into: Buffer = Buffer.alloc(OffsetDataHeaderBytes), at = 0): Buffer {
  encodeChunkHeader({ flags, type: NBD_REPLY_TYPE_OFFSET_DATA, cookie, length: 8 + dataLength }, into, at);
  writeU64(into, offset, at + StructuredReplyBytes);
  return into;
}
/** A whole NBD_REPLY_TYPE_OFFSET_HOLE chunk (32 bytes). */
export const OffsetHoleChunkBytes = StructuredReplyBytes + 12;
export function encodeOffsetHole(cookie: bigint, flags: number, offset: number, size: number, into: Buffer = Buffer.alloc(OffsetHoleChunkBytes), at = 0): Buffer {
  encodeChunkHeader({ flags, type: NBD_REPLY_TYPE_OFFSET_HOLE, cookie, length: 12 }, into, at);
  writeU64(into, offset, at + StructuredReplyBytes);
  into.writeUInt32BE(size, at + StructuredReplyBytes + 8);
  return into;
}

/** One block status descriptor: length bytes with these status flags. */
export interface BlockDescriptor { length: number; flags: number }
/** A whole NBD_REPLY_TYPE_BLOCK_STATUS chunk for one metadata context. */
export function encodeBlockStatus(cookie: bigint, flags: number, contextId: number, descriptors: BlockDescriptor[]): Buffer {
  const payload = 4 + 8 * descriptors.length;
  const b = Buffer.alloc(StructuredReplyBytes + payload);
  encodeChunkHeader({ flags, type: NBD_REPLY_TYPE_BLOCK_STATUS, cookie, length: payload }, b);
  b.writeUInt32BE(contextId >>> 0, StructuredReplyBytes);
  descriptors.forEach((d, i) => {
    b.writeUInt32BE(d.length, StructuredReplyBytes + 4 + 8 * i);
    b.writeUInt32BE(d.flags >>> 0, StructuredReplyBytes + 8 + 8 * i);
  });
  return b;
}
/** A whole NBD_REPLY_TYPE_ERROR chunk (or ERROR_OFFSET when offset is given). */
export function encodeErrorChunk(cookie: bigint, flags: number, error: number, message = '', offset?: number): Buffer {
  const m = stringBytes(message, 'message');
  const payload = 6 + m.length + (offset === undefined ? 0 : 8);
  const b = Buffer.alloc(StructuredReplyBytes + payload);
  encodeChunkHeader({ flags, type: offset === undefined ? NBD_REPLY_TYPE_ERROR : NBD_REPLY_TYPE_ERROR_OFFSET, cookie, length: payload }, b);
  b.writeUInt32BE(error, StructuredReplyBytes);
  b.writeUInt16BE(m.length, StructuredReplyBytes + 4);
  m.copy(b, StructuredReplyBytes + 6);
  if (offset !== undefined) writeU64(b, offset, StructuredReplyBytes + 6 + m.length);
  return b;
}
/** A whole NBD_REPLY_TYPE_NONE chunk with NBD_REPLY_FLAG_DONE. */
export function encodeDoneChunk(cookie: bigint): Buffer {
  return encodeChunkHeader({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_NONE, cookie, length: 0 });
}

/** A structured chunk's payload, decoded by its type (a client's side). */
export type ChunkPayload =
  | { type: typeof NBD_REPLY_TYPE_NONE }
  | { type: typeof NBD_REPLY_TYPE_OFFSET_DATA; offset: number; data: Buffer }
  | { type: typeof NBD_REPLY_TYPE_OFFSET_HOLE; offset: number; size: number }
  | { type: typeof NBD_REPLY_TYPE_BLOCK_STATUS; contextId: number; descriptors: BlockDescriptor[] }
  | { type: 'error'; code: number; error: number; message: string; offset: number | undefined };
export function decodeChunkPayload(type: number, payload: Buffer): ChunkPayload {
  switch (type) {
    case NBD_REPLY_TYPE_NONE:
      if (payload.length !== 0) fail('NBD_REPLY_TYPE_NONE: payload not empty');
      return { type };
    case NBD_REPLY_TYPE_OFFSET_DATA:
      if (payload.length < 9) fail('NBD_REPLY_TYPE_OFFSET_DATA: shorter than 9 bytes');
      return { type, offset: readU64(payload, 0), data: payload.subarray(8) };
    case NBD_REPLY_TYPE_OFFSET_HOLE: {
      if (payload.length !== 12) fail('NBD_REPLY_TYPE_OFFSET_HOLE: length is not 12');
      const size = payload.readUInt32BE(8);
      if (size === 0) fail('NBD_REPLY_TYPE_OFFSET_HOLE: zero size');
      return { type, offset: readU64(payload, 0), size };
    }
    case NBD_REPLY_TYPE_BLOCK_STATUS: {
      if (payload.length < 12 || (payload.length - 4) % 8 !== 0) fail('NBD_REPLY_TYPE_BLOCK_STATUS: bad length');
      const descriptors: BlockDescriptor[] = [];
      for (let at = 4; at < payload.length; at += 8) {
        const length = payload.readUInt32BE(at);
        if (length === 0) fail('NBD_REPLY_TYPE_BLOCK_STATUS: zero-length descriptor');
        descriptors.push({ length, flags: payload.readUInt32BE(at + 4) });
      }
      return { type, contextId: payload.readUInt32BE(0), descriptors };
    }
    default: {
      if ((type & NBD_REPLY_TYPE_FLAG_ERROR) === 0) fail(`structured reply: unknown chunk type ${type}`);
      if (payload.length < 6) fail('error chunk: shorter than 6 bytes');
      const n = payload.readUInt16BE(4);
      if (n > payload.length - 6) fail('error chunk: message longer than the chunk');
      const message = utf8(payload.subarray(6, 6 + n), 'error message');
      let offset: number | undefined;
      if (type === NBD_REPLY_TYPE_ERROR_OFFSET) {
        if (payload.length !== 14 + n) fail('NBD_REPLY_TYPE_ERROR_OFFSET: bad length');
        offset = readU64(payload, 6 + n);
      }
      return { type: 'error', code: type, error: payload.readUInt32BE(0), message, offset };
    }
  }
}
