/**
 * A bare NBD client for tests that must send what real clients never do (writes to a read-only
 * export, oversized and malformed requests): a raw socket, the handshake up to NBD_OPT_GO, and
 * helpers to send requests and read whole replies. Built on shared/nbd/protocol.ts.
 */
import { connect, type Socket } from 'node:net';
import * as P from '../../shared/nbd/protocol.js';

export class RawNbd {
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => { this.buf = Buffer.concat([this.buf, d]); this.wake(); });
    socket.on('close', () => { this.closed = true; this.wake(); });
    socket.on('error', () => undefined);
  }

  /** Connects to a unix socket path, or to a TCP port on 127.0.0.1. */
  static async connect(where: string | number): Promise<RawNbd> {
    const socket = typeof where === 'number' ? connect(where, '127.0.0.1') : connect(where);
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
    return new RawNbd(socket);
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** The next n bytes; throws when the server closed the connection first. */
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.closed) throw new Error('connection closed');
      await new Promise<void>((r) => this.waiters.push(r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Resolves true once the server has closed the connection (within ms), false otherwise. */
  closedWithin(ms: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(this.closed), ms);
      this.socket.once('close', () => { clearTimeout(t); resolve(true); });
    });
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  /** Sends an option; returns the replies up to the final one. */
  async option(option: number, data?: Buffer): Promise<Array<{ type: number; data: Buffer }>> {
    this.write(P.encodeOption(option, data));
    const replies: Array<{ type: number; data: Buffer }> = [];
    for (;;) {
      const h = P.decodeOptionReplyHeader(await this.read(P.OptionReplyHeaderBytes));
      replies.push({ type: h.type, data: Buffer.from(await this.read(h.length)) });
      if (h.type === P.NBD_REP_ACK || P.isOptionError(h.type)) return replies;
    }
  }

  /** The greeting and client flags, optionally structured replies and base:allocation, then NBD_OPT_GO. */
  async handshake(name: string, options: { structured?: boolean } = {}): Promise<Array<{ type: number; data: Buffer }>> {
    P.decodeGreeting(await this.read(P.GreetingBytes));
    this.write(P.encodeClientFlags(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES));
    if (options.structured) {
      await this.option(P.NBD_OPT_STRUCTURED_REPLY);
      await this.option(P.NBD_OPT_SET_META_CONTEXT, P.encodeMetaContextRequest({ name, queries: [P.BaseAllocation] }));
    }
    return this.option(P.NBD_OPT_GO, P.encodeInfoRequest({ name, requests: [] }));
  }

  request(req: Partial<P.Request> & { type: number }, data?: Buffer): void {
    this.write(P.encodeRequest({ flags: 0, cookie: 1n, offset: 0, length: 0, ...req }));
    if (data) this.write(data);
  }

  /** A simple reply: its error, and length bytes of data when it is a successful READ. */
  async simpleReply(dataLength = 0): Promise<{ error: number; cookie: bigint; data: Buffer }> {
    const r = P.decodeSimpleReply(await this.read(P.SimpleReplyBytes));
    return { ...r, data: r.error === 0 && dataLength > 0 ? Buffer.from(await this.read(dataLength)) : Buffer.alloc(0) };
  }

  /** The chunks of one structured reply, up to the one marked done. */
  async structuredReply(): Promise<P.ChunkPayload[]> {
    return (await this.structuredReplyOf()).chunks;
  }

  /** One structured reply with its cookie; throws when a chunk of another reply comes in its middle. */
  async structuredReplyOf(): Promise<{ cookie: bigint; chunks: P.ChunkPayload[] }> {
    const chunks: P.ChunkPayload[] = [];
    let cookie: bigint | undefined;
    for (;;) {
      const h = P.decodeChunkHeader(await this.read(P.StructuredReplyBytes));
      if (cookie !== undefined && h.cookie !== cookie) throw new Error(`chunk of reply ${h.cookie} inside reply ${cookie}`);
      cookie = h.cookie;
      chunks.push(P.decodeChunkPayload(h.type, Buffer.from(await this.read(h.length))));
      if (h.flags & P.NBD_REPLY_FLAG_DONE) return { cookie, chunks };
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
