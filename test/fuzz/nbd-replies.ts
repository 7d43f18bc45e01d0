/**
 * The NBD fuzz target's referee: given every byte a client sent and every byte the server answered,
 * says whether the server kept to the protocol (docs/formats/nbd.md). It walks the client's bytes as
 * the server must read them (flags, options with their lengths, then requests with WRITE payloads)
 * and the server's answer beside them: the greeting; for each option one group of replies that ends
 * in an ACK or an error, echoing the option; the export-name reply; then in transmission a reply for
 * a request that was sent, at most one final reply per request, READ data of the right length and
 * inside the request's range, structured chunks that decode. The server may stop anywhere between two
 * messages (the client hung up: its later replies are not written), never inside one, and never
 * says anything after a message the protocol ends the session with.
 */
import * as P from '../../shared/nbd/protocol.js';
import { MaxOptionBytes, MaxPayloadBytes } from '../../service/failover/nbd/types.js';

export class ProtocolViolation extends Error {
  override name = 'ProtocolViolation';
}

const violation = (message: string): never => { throw new ProtocolViolation(message); };

/** Throws a ProtocolViolation naming the first thing the server got wrong; returns what happened. */
export function checkConversation(sent: Buffer, got: Buffer, exportSize: number): 'handshake' | 'transmission' {
  const g = new Cursor(got, 'server');
  if (got.length < P.GreetingBytes) violation(`the server sent ${got.length} bytes, not its ${P.GreetingBytes}-byte greeting`);
  const greeting = g.take(P.GreetingBytes);
  if (greeting.readBigUInt64BE(0) !== P.NBDMAGIC || greeting.readBigUInt64BE(8) !== P.IHAVEOPT) violation('bad greeting magic');
  if (greeting.readUInt16BE(16) !== (P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES)) violation('unexpected handshake flags');
  const s = new Cursor(sent, 'client');
  if (s.left < 4) return g.end('handshake');
  const clientFlags = s.take(4).readUInt32BE(0);
  if ((clientFlags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) !== 0) return g.end('handshake');
  const noZeroes = (clientFlags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
  let structured = false;

  for (;;) {
    if (s.left < P.OptionHeaderBytes) return g.end('handshake');
    const head = s.take(P.OptionHeaderBytes);
    if (head.readBigUInt64BE(0) !== P.IHAVEOPT) return g.end('handshake');
    const option = head.readUInt32BE(8);
    const length = head.readUInt32BE(12);
    if (s.left < length) return g.end('handshake'); // the server waits for the rest; the client hung up
    s.skip(length);
    if (length > MaxOptionBytes && option === P.NBD_OPT_EXPORT_NAME) return g.end('handshake');
    if (option === P.NBD_OPT_EXPORT_NAME) {
      if (g.left === 0) return 'handshake'; // an unknown name ends the session
      const reply = g.take(P.ExportNameReplyBytes + (noZeroes ? 0 : P.ExportNameReplyPadding));
      if (Number(reply.readBigUInt64BE(0)) !== exportSize) violation(`export-name reply gives size ${reply.readBigUInt64BE(0)}`);
      break;
    }
    // One group of replies per option: INFO / META_CONTEXT replies, then ACK or an error.
    let final: number | undefined;
    let exportInfo = false;
    while (final === undefined) {
      if (g.left === 0) return 'handshake'; // the client hung up before this reply was written
      const r = g.take(P.OptionReplyHeaderBytes);
      if (r.readBigUInt64BE(0) !== P.NBD_OPT_REPLY_MAGIC) violation(`option reply with magic 0x${r.readBigUInt64BE(0).toString(16)}`);
      const echo = r.readUInt32BE(8);
      const type = r.readUInt32BE(12);
      const data = g.take(r.readUInt32BE(16));
      if (echo !== option) violation(`reply to option ${echo} where option ${option} was asked`);
      if (type === P.NBD_REP_ACK || P.isOptionError(type)) final = type;
      else if (type === P.NBD_REP_INFO) {
        const info = decodeOr(() => P.decodeInfo(data), 'NBD_REP_INFO');
        if (info.type === P.NBD_INFO_EXPORT) {
          exportInfo = true;
          if (info.size !== exportSize) violation(`NBD_INFO_EXPORT gives size ${info.size}`);
        }
      } else if (type === P.NBD_REP_META_CONTEXT) {
        const meta = decodeOr(() => P.decodeMetaContext(data), 'NBD_REP_META_CONTEXT');
        if (meta.name !== P.BaseAllocation) violation(`meta context ${meta.name} offered`);
      } else {
        violation(`option reply type ${type} to option ${option}`);
      }
    }
    // An ABORT acknowledged ends the session (one with data too large to read was refused instead).
    if (option === P.NBD_OPT_ABORT && final === P.NBD_REP_ACK) return g.end('handshake');
    if (option === P.NBD_OPT_STRUCTURED_REPLY && final === P.NBD_REP_ACK) structured = true;
    if (option === P.NBD_OPT_GO && final === P.NBD_REP_ACK) {
      if (!exportInfo) violation('NBD_OPT_GO acknowledged without NBD_INFO_EXPORT');
      break;
    }
  }

  checkTransmission(s, g, structured);
  return 'transmission';
}

interface SentRequest extends P.Request { done: boolean }

function checkTransmission(s: Cursor, g: Cursor, structured: boolean): void {
  // The requests as the server reads them: it stops at bad magic, DISC, or a WRITE too large to skip.
  const requests: SentRequest[] = [];
  while (s.left >= P.RequestBytes) {
    const head = s.take(P.RequestBytes);
    if (head.readUInt32BE(0) !== P.NBD_REQUEST_MAGIC) break;
    const req = P.decodeRequest(head);
    if (req.type === P.NBD_CMD_DISC) break;
    requests.push({ ...req, done: false });
    if (req.type === P.NBD_CMD_WRITE) {
      if (req.length > MaxPayloadBytes || s.left < req.length) break;
      s.skip(req.length);
    }
  }
  /** The request a reply answers; undefined when several awaiting ones share its cookie (the client's fault: nothing more can be judged). */
  const find = (cookie: bigint): SentRequest | undefined => {
    const awaiting = requests.filter((r) => r.cookie === cookie && !r.done);
    if (awaiting.length === 0) violation(`a reply for cookie ${cookie}, which no request awaiting a reply has`);
    return awaiting.length === 1 ? awaiting[0] : undefined;
  };
  while (g.left > 0) {
    const magic = g.peek32();
    if (magic === P.NBD_SIMPLE_REPLY_MAGIC) {
      const reply = P.decodeSimpleReply(g.take(P.SimpleReplyBytes));
      const req = find(reply.cookie);
      if (!req) return;
      req.done = true;
      if (req.type === P.NBD_CMD_READ && structured) violation('a simple reply to a READ after structured replies were agreed');
      if (req.type === P.NBD_CMD_READ && reply.error === 0) g.take(req.length);
    } else if (magic === P.NBD_STRUCTURED_REPLY_MAGIC) {
      if (!structured) violation('a structured reply that was never agreed');
      const chunk = P.decodeChunkHeader(g.take(P.StructuredReplyBytes));
      const payload = g.take(chunk.length);
      const req = find(chunk.cookie);
      if (!req) return;
      const body = decodeOr(() => P.decodeChunkPayload(chunk.type, payload), `chunk type ${chunk.type}`);
      const end = req.offset + req.length;
      if (body.type === P.NBD_REPLY_TYPE_OFFSET_DATA && (body.offset < req.offset || body.offset + body.data.length > end)) violation('READ data outside the request');
      if (body.type === P.NBD_REPLY_TYPE_OFFSET_HOLE && (body.offset < req.offset || body.offset + body.size > end)) violation('a hole outside the request');
      if (body.type === P.NBD_REPLY_TYPE_BLOCK_STATUS) {
        if (req.type !== P.NBD_CMD_BLOCK_STATUS) violation('block status for another command');
        const total = body.descriptors.reduce((n, d) => n + d.length, 0);
        if (total > req.length) violation(`block status covers ${total} bytes of a ${req.length}-byte request`);
        if ((req.flags & P.NBD_CMD_FLAG_REQ_ONE) !== 0 && body.descriptors.length !== 1) violation('REQ_ONE answered with several descriptors');
      }
      if ((chunk.flags & P.NBD_REPLY_FLAG_DONE) !== 0) req.done = true;
    } else {
      violation(`a transmission reply with magic 0x${magic.toString(16)}`);
    }
  }
}

function decodeOr<T>(decode: () => T, what: string): T {
  try {
    return decode();
  } catch (err) {
    return violation(`${what} does not decode: ${(err as Error).message}`);
  }
}

class Cursor {
  private at = 0;
  constructor(private readonly buf: Buffer, private readonly who: string) {}
  get left(): number { return this.buf.length - this.at; }
  take(n: number): Buffer {
    if (this.left < n) violation(`the ${this.who} stopped inside a message (${this.left} of ${n} bytes)`);
    const out = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }
  skip(n: number): void { this.at += n; }
  peek32(): number {
    if (this.left < 4) violation(`the ${this.who} stopped inside a message (${this.left} bytes)`);
    return this.buf.readUInt32BE(this.at);
  }
  /** Nothing more may come from the server at this point. */
  end<T>(result: T): T {
    if (this.left > 0) violation(`${this.left} bytes after the point where the session ends`);
    return result;
  }
}
