/**
 * Exact-length reads from a socket for the NBD server: read(n) resolves with the next n bytes,
 * tryRead(n) returns them at once when they are here already, skip(n) discards the next n bytes
 * without keeping them. At most one read or skip is pending
 * at a time (the protocol is read strictly in order). The socket is paused while more than
 * MaxBufferedBytes wait unread, so a client that sends faster than we parse cannot grow our memory.
 *
 * Failure: when the socket ends or fails, the pending and every later read rejects with
 * ConnectionEnded. detach() hands the socket back (for a TLS upgrade) with whatever was read ahead.
 */
import type { Duplex } from 'node:stream';

const MaxBufferedBytes = 1024 * 1024;

/** The peer went away (or the socket failed) before the bytes asked for arrived. */
export class ConnectionEnded extends Error {
  override name = 'ConnectionEnded';
}

export class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended: Error | undefined;
  private pending: { bytes: number; skip: boolean; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private readonly onData = (chunk: Buffer) => {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    this.serve();
    if (this.buffered > MaxBufferedBytes) this.socket.pause();
  };
  private readonly onEnd = () => this.end(new ConnectionEnded('the client closed the connection'));
  private readonly onError = (err: Error) => this.end(new ConnectionEnded(`connection failed: ${err.message}`));

  constructor(private readonly socket: Duplex) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
    socket.resume();
  }

  /** The next bytes bytes, as one Buffer (a view of what arrived when it arrived in one piece). */
  read(bytes: number): Promise<Buffer> {
    return this.request(bytes, false);
  }

  /**
   * The next bytes bytes when they have all arrived already, else undefined (nothing consumed):
   * lets the caller take what a client sent together without waiting. Not while a read is pending.
   */
  tryRead(bytes: number): Buffer | undefined {
    if (this.pending || this.buffered < bytes) return undefined;
    const out = this.take(bytes);
    if (this.buffered <= MaxBufferedBytes && this.socket.isPaused() && !this.ended) this.socket.resume();
    return out;
  }

  /** Discards the next bytes bytes. */
  async skip(bytes: number): Promise<void> {
    await this.request(bytes, true);
  }

  /** Stops reading; returns the bytes read ahead, which the caller puts back (socket.unshift). */
  detach(): Buffer {
    this.socket.pause();
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
    const rest = Buffer.concat(this.chunks);
    this.chunks = [];
    this.buffered = 0;
    return rest;
  }

  private request(bytes: number, skip: boolean): Promise<Buffer> {
    if (this.pending) return Promise.reject(new Error('ByteReader: a read is already pending'));
    return new Promise<Buffer>((resolve, reject) => {
      this.pending = { bytes, skip, resolve, reject };
      this.serve();
    });
  }

  private serve(): void {
    const p = this.pending;
    if (!p) return;
    if (p.skip) {
      // Discard what is there; the rest as it comes.
      while (p.bytes > 0 && this.chunks.length > 0) {
        const c = this.chunks[0]!;
        const n = Math.min(c.length, p.bytes);
        p.bytes -= n;
        this.buffered -= n;
        if (n === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(n);
      }
      if (p.bytes === 0) this.settle(Buffer.alloc(0));
    } else if (this.buffered >= p.bytes) {
      this.settle(this.take(p.bytes));
    }
    if (this.pending && this.ended) {
      const { reject } = this.pending;
      this.pending = undefined;
      reject(this.ended);
    }
    if (this.buffered <= MaxBufferedBytes && this.socket.isPaused() && !this.ended) this.socket.resume();
  }

  private settle(value: Buffer): void {
    const { resolve } = this.pending!;
    this.pending = undefined;
    resolve(value);
  }

  private take(bytes: number): Buffer {
    this.buffered -= bytes;
    const first = this.chunks[0]!;
    if (first.length >= bytes) {
      if (first.length === bytes) this.chunks.shift();
      else this.chunks[0] = first.subarray(bytes);
      return first.subarray(0, bytes);
    }
    const out = Buffer.allocUnsafe(bytes);
    let at = 0;
    while (at < bytes) {
      const c = this.chunks[0]!;
      const n = Math.min(c.length, bytes - at);
      c.copy(out, at, 0, n);
      at += n;
      if (n === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(n);
    }
    return out;
  }

  private end(err: Error): void {
    if (this.ended) return;
    this.ended = err;
    this.serve();
  }
}
