/**
 * An NBD client (docs/formats/nbd.md, "What our client sends"): fixed newstyle handshake,
 * NBD_OPT_STRUCTURED_REPLY, NBD_OPT_SET_META_CONTEXT, NBD_OPT_GO; then READ, BLOCK_STATUS and DISC,
 * several requests in flight, matched to their replies by cookie. Every message is built and parsed by
 * ./protocol.ts. The agent's live-VM sources read qemu's exports with it; tests read our own server.
 *
 * Input: a unix socket path or a TCP host and port, an export name, the meta contexts wanted.
 * Output: the export's size and flags, the context ids the server granted, reads and block status.
 * Failure: everything a caller can act on is a LifeboatError: no socket or refused ('unavailable'),
 * an export the server does not have ('not_found'), a server without fixed newstyle or structured
 * replies ('unsupported'), bytes that break the protocol ('corrupt': the connection is closed), an
 * error the server returned for one request ('io', naming the request; the connection goes on).
 */
import { connect as netConnect, type Socket } from 'node:net';
import { LifeboatError } from '../errors.js';
import {
  BaseAllocation, NbdProtocolError, NBD_CMD_BLOCK_STATUS, NBD_CMD_DISC, NBD_CMD_READ,
  NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES, NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE, NBD_INFO_EXPORT, NBD_OPT_GO, NBD_OPT_SET_META_CONTEXT, NBD_OPT_STRUCTURED_REPLY,
  NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, NBD_REPLY_TYPE_OFFSET_DATA, NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_REP_ACK, NBD_REP_ERR_POLICY, NBD_REP_ERR_UNKNOWN, NBD_REP_ERR_UNSUP, NBD_REP_INFO, NBD_REP_META_CONTEXT,
  OptionReplyHeaderBytes, RequestBytes, SimpleReplyBytes, StructuredReplyBytes, decodeChunkHeader,
  decodeChunkPayload, decodeGreeting, decodeInfo, decodeMetaContext, decodeOptionReplyHeader,
  decodeSimpleReply, encodeClientFlags, encodeInfoRequest, encodeMetaContextRequest, encodeOption,
  encodeRequest, isOptionError, replyKind, type BlockDescriptor,
} from './protocol.js';

export const DefaultNbdTimeoutMs = 30_000;
/** The largest READ sent at once (qemu's limit is 32 MiB; a server's NBD_INFO_BLOCK_SIZE may lower it). */
export const MaxReadBytes = 32 << 20;
/** The largest range asked about in one BLOCK_STATUS (servers may answer for less). */
export const MaxStatusBytes = 1 << 30;

export interface NbdConnectOptions {
  /** A unix socket path, or host and port for TCP. */
  socketPath?: string;
  host?: string;
  port?: number;
  exportName: string;
  /** Meta contexts to select (e.g. 'base:allocation', 'qemu:dirty-bitmap:b0'). */
  metaContexts?: string[];
  timeoutMs?: number;
}

/** A block status extent: absolute offset, length, the context's flags. */
export interface StatusExtent { offset: number; length: number; flags: number }

/** Buffers a socket's bytes and hands out exact-length reads in order. */
class ByteQueue {
  private chunks: Buffer[] = [];
  private have = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  push(b: Buffer): void {
    this.chunks.push(b);
    this.have += b.length;
    this.pump();
  }
  fail(err: Error): void {
    this.failure ??= err;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(this.failure);
  }
  read(n: number): Promise<Buffer> {
    if (this.waiter) throw new Error('ByteQueue: one read at a time');
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
      this.pump();
    });
  }
  private pump(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.have < w.n) {
      if (this.failure) { this.waiter = undefined; w.reject(this.failure); }
      return;
    }
    this.waiter = undefined;
    let out: Buffer;
    const first = this.chunks[0]!;
    if (first.length >= w.n) {
      out = first.subarray(0, w.n);
      if (first.length === w.n) this.chunks.shift(); else this.chunks[0] = first.subarray(w.n);
    } else {
      out = Buffer.allocUnsafe(w.n);
      let at = 0;
      while (at < w.n) {
        const c = this.chunks[0]!;
        const take = Math.min(c.length, w.n - at);
        c.copy(out, at, 0, take);
        at += take;
        if (take === c.length) this.chunks.shift(); else this.chunks[0] = c.subarray(take);
      }
    }
    this.have -= w.n;
    w.resolve(out);
  }
}

interface InFlight {
  type: number;
  offset: number;
  length: number;
  /** READ: the data, filled by data and hole chunks (zeroed, so holes need no write). */
  data?: Buffer;
  /** BLOCK_STATUS: descriptors per context id. */
  status?: Map<number, BlockDescriptor[]>;
  error?: LifeboatError;
  resolve: () => void;
  reject: (err: Error) => void;
}

function optionFailure(what: string, type: number, message: string, where: string): LifeboatError {
  const why = message ? `: ${message}` : '';
  if (type === NBD_REP_ERR_UNKNOWN) return new LifeboatError('not_found', `nbd ${where}: ${what} refused, no such export${why}`);
  if (type === NBD_REP_ERR_UNSUP) return new LifeboatError('unsupported', `nbd ${where}: ${what} not supported by the server${why}`);
  if (type === NBD_REP_ERR_POLICY) return new LifeboatError('forbidden', `nbd ${where}: ${what} refused by policy${why}`);
  return new LifeboatError('io', `nbd ${where}: ${what} failed (reply 0x${type.toString(16)})${why}`);
}

export class NbdClient {
  /** Export size in bytes. */
  size = 0;
  transmissionFlags = 0;
  /** Granted meta contexts, name → id. */
  readonly contexts = new Map<string, number>();
  /** Largest READ this client sends. */
  maxRead = MaxReadBytes;
  /** Bytes returned by READs (data and holes), for cost figures. */
  bytesRead = 0;
  private readonly inFlight = new Map<bigint, InFlight>();
  private nextCookie = 1n;
  private closed = false;
  private readonly where: string;

  private constructor(private readonly sock: Socket, private readonly queue: ByteQueue, private readonly options: NbdConnectOptions) {
    this.where = options.socketPath ?? `${options.host}:${options.port}`;
  }

  /** Connects and negotiates; resolves in the transmission phase. */
  static async connect(options: NbdConnectOptions): Promise<NbdClient> {
    const where = options.socketPath ?? `${options.host ?? 'localhost'}:${options.port}`;
    const timeoutMs = options.timeoutMs ?? DefaultNbdTimeoutMs;
    const sock = await new Promise<Socket>((resolve, reject) => {
      const s = options.socketPath ? netConnect({ path: options.socketPath }) : netConnect({ host: options.host ?? 'localhost', port: options.port ?? 10809 });
      const timer = setTimeout(() => { s.destroy(); reject(new LifeboatError('unavailable', `nbd ${where}: no connection within ${timeoutMs} ms`)); }, timeoutMs);
      s.once('connect', () => { clearTimeout(timer); s.removeAllListeners('error'); resolve(s); });
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const why = err.code === 'ENOENT' ? 'no such socket' : err.code === 'ECONNREFUSED' ? 'connection refused' : err.message;
        reject(new LifeboatError('unavailable', `nbd ${where}: ${why}`, { cause: err }));
      });
    });
    sock.setNoDelay?.(true);
    const queue = new ByteQueue();
    sock.on('data', (b: Buffer) => queue.push(b));
    sock.on('error', (err) => queue.fail(new LifeboatError('unavailable', `nbd ${where}: ${err.message}`, { cause: err })));
    sock.on('close', () => queue.fail(new LifeboatError('unavailable', `nbd ${where}: connection closed by the server`)));
    const client = new NbdClient(sock, queue, { ...options, timeoutMs });
    const timer = setTimeout(() => { queue.fail(new LifeboatError('unavailable', `nbd ${where}: handshake not done within ${timeoutMs} ms`)); sock.destroy(); }, timeoutMs);
    try {
      await client.handshake();
    } catch (err) {
      sock.destroy();
      throw err instanceof NbdProtocolError ? new LifeboatError('corrupt', `nbd ${where}: ${err.message}`, { cause: err }) : err;
    } finally {
      clearTimeout(timer);
    }
    void client.receive();
    return client;
  }

  private async handshake(): Promise<void> {
    const { handshakeFlags } = decodeGreeting(await this.queue.read(18));
    if (!(handshakeFlags & NBD_FLAG_FIXED_NEWSTYLE)) throw new LifeboatError('unsupported', `nbd ${this.where}: server does not speak fixed newstyle`);
    this.sock.write(encodeClientFlags(NBD_FLAG_C_FIXED_NEWSTYLE | (handshakeFlags & NBD_FLAG_NO_ZEROES ? NBD_FLAG_C_NO_ZEROES : 0)));

    // Structured replies: required for holes and BLOCK_STATUS.
    this.sock.write(encodeOption(NBD_OPT_STRUCTURED_REPLY));
    const sr = await this.optionReply(NBD_OPT_STRUCTURED_REPLY);
    if (sr.type !== NBD_REP_ACK) throw optionFailure('NBD_OPT_STRUCTURED_REPLY', sr.type, sr.data.toString('utf8'), this.where);

    const name = this.options.exportName;
    const wanted = this.options.metaContexts ?? [];
    if (wanted.length > 0) {
      this.sock.write(encodeOption(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ name, queries: wanted })));
      for (;;) {
        const r = await this.optionReply(NBD_OPT_SET_META_CONTEXT);
        if (r.type === NBD_REP_ACK) break;
        if (r.type === NBD_REP_META_CONTEXT) { const m = decodeMetaContext(r.data); this.contexts.set(m.name, m.id); continue; }
        throw optionFailure('NBD_OPT_SET_META_CONTEXT', r.type, r.data.toString('utf8'), this.where);
      }
    }

    this.sock.write(encodeOption(NBD_OPT_GO, encodeInfoRequest({ name, requests: [NBD_INFO_BLOCK_SIZE] })));
    for (;;) {
      const r = await this.optionReply(NBD_OPT_GO);
      if (r.type === NBD_REP_ACK) break;
      if (r.type === NBD_REP_INFO) {
        const info = decodeInfo(r.data);
        if (info.type === NBD_INFO_EXPORT) { this.size = info.size; this.transmissionFlags = info.transmissionFlags; }
        if (info.type === NBD_INFO_BLOCK_SIZE && info.maximum > 0) this.maxRead = Math.min(MaxReadBytes, info.maximum);
        continue;
      }
      if (isOptionError(r.type)) throw optionFailure(`export '${name}'`, r.type, r.data.toString('utf8'), this.where);
      // Other replies to GO are informational; ignore them.
    }
  }

  private async optionReply(option: number): Promise<{ type: number; data: Buffer }> {
    const h = decodeOptionReplyHeader(await this.queue.read(OptionReplyHeaderBytes));
    const data = h.length > 0 ? Buffer.from(await this.queue.read(h.length)) : Buffer.alloc(0);
    if (h.option !== option) throw new NbdProtocolError(`option reply for ${h.option}, expected ${option}`);
    return { type: h.type, data };
  }

  /** The reply loop of the transmission phase: runs until the connection ends. */
  private async receive(): Promise<void> {
    try {
      for (;;) {
        const magic = await this.queue.read(4);
        const kind = replyKind(magic.readUInt32BE(0));
        if (kind === 'simple') {
          const rest = await this.queue.read(SimpleReplyBytes - 4);
          const reply = decodeSimpleReply(Buffer.concat([magic, rest]));
          const req = this.take(reply.cookie, true);
          if (reply.error !== 0) req.error = this.requestError(req, `error ${reply.error}`);
          else if (req.type === NBD_CMD_READ) { (await this.queue.read(req.length)).copy(req.data!); this.bytesRead += req.length; }
          this.finish(reply.cookie, req);
        } else if (kind === 'structured') {
          const rest = await this.queue.read(StructuredReplyBytes - 4);
          const h = decodeChunkHeader(Buffer.concat([magic, rest]));
          const req = this.take(h.cookie, false);
          const payload = h.length > 0 ? await this.queue.read(h.length) : Buffer.alloc(0);
          this.chunk(req, h.type, payload);
          if (h.flags & NBD_REPLY_FLAG_DONE) this.finish(h.cookie, req);
        } else {
          throw new NbdProtocolError(`reply with unknown magic 0x${magic.readUInt32BE(0).toString(16)}`);
        }
      }
    } catch (err) {
      const e = err instanceof NbdProtocolError ? new LifeboatError('corrupt', `nbd ${this.where}: ${err.message}`, { cause: err }) : err as Error;
      this.closed = true;
      this.sock.destroy();
      for (const [cookie, req] of this.inFlight) { this.inFlight.delete(cookie); req.reject(e); }
    }
  }

  private take(cookie: bigint, simple: boolean): InFlight {
    const req = this.inFlight.get(cookie);
    if (!req) throw new NbdProtocolError(`${simple ? 'simple' : 'structured'} reply for unknown cookie ${cookie}`);
    return req;
  }

  private chunk(req: InFlight, type: number, payload: Buffer): void {
    const p = decodeChunkPayload(type, payload);
    const inRange = (offset: number, length: number) => offset >= req.offset && offset + length <= req.offset + req.length;
    if (p.type === NBD_REPLY_TYPE_OFFSET_DATA) {
      if (req.type !== NBD_CMD_READ || !inRange(p.offset, p.data.length)) throw new NbdProtocolError('data chunk outside its READ');
      p.data.copy(req.data!, p.offset - req.offset);
      this.bytesRead += p.data.length;
    } else if (p.type === NBD_REPLY_TYPE_OFFSET_HOLE) {
      if (req.type !== NBD_CMD_READ || !inRange(p.offset, p.size)) throw new NbdProtocolError('hole chunk outside its READ');
      this.bytesRead += p.size; // the buffer is zeroed already
    } else if (p.type === NBD_REPLY_TYPE_BLOCK_STATUS) {
      if (req.type !== NBD_CMD_BLOCK_STATUS) throw new NbdProtocolError('block status chunk for another command');
      req.status!.set(p.contextId, p.descriptors);
    } else if (p.type === 'error') {
      req.error ??= this.requestError(req, `error ${p.error}${p.message ? ` (${p.message})` : ''}${p.offset !== undefined ? ` at ${p.offset}` : ''}`);
    }
  }

  private requestError(req: InFlight, why: string): LifeboatError {
    const what = req.type === NBD_CMD_READ ? 'READ' : req.type === NBD_CMD_BLOCK_STATUS ? 'BLOCK_STATUS' : `command ${req.type}`;
    return new LifeboatError('io', `nbd ${this.where} '${this.options.exportName}': ${what} ${req.offset}+${req.length}: ${why}`);
  }

  private finish(cookie: bigint, req: InFlight): void {
    this.inFlight.delete(cookie);
    if (req.error) req.reject(req.error); else req.resolve();
  }

  private send(type: number, flags: number, offset: number, length: number, extra: Partial<InFlight>): Promise<InFlight> {
    if (this.closed) return Promise.reject(new LifeboatError('unavailable', `nbd ${this.where}: connection closed`));
    if (offset < 0 || length < 0 || offset + length > this.size) {
      return Promise.reject(new LifeboatError('invalid_argument', `nbd ${this.where}: range ${offset}+${length} outside the export (${this.size} bytes)`));
    }
    const cookie = this.nextCookie++;
    return new Promise<InFlight>((resolve, reject) => {
      const req: InFlight = { type, offset, length, ...extra, resolve: () => resolve(req), reject };
      this.inFlight.set(cookie, req);
      this.sock.write(encodeRequest({ flags, type, cookie, offset, length }, Buffer.alloc(RequestBytes)));
    });
  }

  /** Reads length bytes at offset (split into READs of at most maxRead, all sent at once). */
  async read(offset: number, length: number): Promise<Buffer> {
    if (length <= this.maxRead) {
      const req = await this.send(NBD_CMD_READ, 0, offset, length, { data: Buffer.alloc(length) });
      return req.data!;
    }
    const out = Buffer.alloc(length);
    const parts: Promise<void>[] = [];
    for (let at = 0; at < length; at += this.maxRead) {
      const n = Math.min(this.maxRead, length - at);
      parts.push(this.send(NBD_CMD_READ, 0, offset + at, n, { data: out.subarray(at, at + n) }).then(() => undefined));
    }
    await Promise.all(parts);
    return out;
  }

  /**
   * One BLOCK_STATUS for a granted context: the descriptors the server returned for it, as absolute
   * extents (they may cover less than asked, never more than the export).
   */
  async blockStatus(context: string, offset: number, length: number): Promise<StatusExtent[]> {
    const id = this.contexts.get(context);
    if (id === undefined) throw new LifeboatError('not_found', `nbd ${this.where} '${this.options.exportName}': meta context ${context} was not granted`);
    const req = await this.send(NBD_CMD_BLOCK_STATUS, 0, offset, Math.min(length, MaxStatusBytes, this.size - offset), { status: new Map() });
    const descriptors = req.status!.get(id) ?? [];
    if (descriptors.length === 0) throw new LifeboatError('corrupt', `nbd ${this.where}: BLOCK_STATUS ${offset}+${length} returned nothing for ${context}`);
    const out: StatusExtent[] = [];
    let at = offset;
    for (const d of descriptors) {
      const len = Math.min(d.length, this.size - at);
      if (len <= 0) break;
      out.push({ offset: at, length: len, flags: d.flags });
      at += len;
    }
    return out;
  }

  /** Every extent of a context over [offset, offset+length), coalesced by equal flags. */
  async *map(context: string = BaseAllocation, offset = 0, length = this.size - offset): AsyncGenerator<StatusExtent> {
    const end = offset + length;
    let at = offset;
    let pending: StatusExtent | undefined;
    while (at < end) {
      for (const e of await this.blockStatus(context, at, end - at)) {
        const clipped = { ...e, length: Math.min(e.length, end - e.offset) };
        if (pending && pending.flags === clipped.flags && pending.offset + pending.length === clipped.offset) pending.length += clipped.length;
        else { if (pending) yield pending; pending = clipped; }
        at = clipped.offset + clipped.length;
        if (at >= end) break;
      }
    }
    if (pending) yield pending;
  }

  /** Sends NBD_CMD_DISC once in-flight requests are answered, then closes. */
  async close(): Promise<void> {
    if (this.closed) return;
    await Promise.allSettled([...this.inFlight.values()].map((r) => new Promise<void>((res) => { const o = r.resolve; const e = r.reject; r.resolve = () => { o(); res(); }; r.reject = (x) => { e(x); res(); }; })));
    this.closed = true;
    await new Promise<void>((resolve) => {
      this.sock.once('close', () => resolve());
      this.sock.end(encodeRequest({ flags: 0, type: NBD_CMD_DISC, cookie: this.nextCookie++, offset: 0, length: 0 }));
      setTimeout(() => { this.sock.destroy(); }, 2_000).unref();
    });
  }
}
