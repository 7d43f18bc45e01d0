/** Turning a put's Body into bytes to send, and checking a declared length on the way. */
import { Readable, Transform, addAbortSignal, pipeline } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import { ErrInvalidArgument } from '../errors.js';
import type { Body, BodyFactory } from './types.js';

/** True when the body can be read again for a retry (a Buffer or a BodyFactory). */
export function isReplayable(body: Body): body is Buffer | BodyFactory {
  return Buffer.isBuffer(body) || typeof body === 'function';
}

/** The bytes of body as a Buffer (left as is) or a fresh Readable. */
export function openBody(body: Body): Buffer | Readable {
  if (Buffer.isBuffer(body)) return body;
  const source = typeof body === 'function' ? body() : body;
  return source instanceof Readable ? source : Readable.from(source, { objectMode: false });
}

/** The declared length of a body: options win, then a Buffer's or a factory's own. */
export function declaredLength(body: Body, contentLength: number | undefined): number | undefined {
  if (contentLength !== undefined) {
    if (!Number.isSafeInteger(contentLength) || contentLength < 0) throw ErrInvalidArgument(`invalid content length ${contentLength}`);
    return contentLength;
  }
  if (Buffer.isBuffer(body)) return body.length;
  if (typeof body === 'function') return body.contentLength;
  return undefined;
}

/**
 * Passes bytes through, counting them, and fails the stream (so the put fails and nothing is
 * committed) if expected is set and the count differs from it at the end or goes past it.
 */
export class LengthCheck extends Transform {
  bytes = 0;

  constructor(private readonly expected: number | undefined) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.expected !== undefined && this.bytes > this.expected) {
      done(ErrInvalidArgument(`body is longer than its declared length ${this.expected}`));
      return;
    }
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    if (this.expected !== undefined && this.bytes !== this.expected) {
      done(ErrInvalidArgument(`body is ${this.bytes} bytes, declared ${this.expected}`));
      return;
    }
    done();
  }
}

/**
 * The body as a length-checked Readable (a Buffer is checked up front). With a signal, an abort
 * destroys the stream, so a put stuck waiting on its source still stops.
 */
export function checkedStream(body: Body, contentLength: number | undefined, signal?: AbortSignal): Readable {
  const expected = declaredLength(body, contentLength);
  const opened = openBody(body);
  let out: Readable;
  if (Buffer.isBuffer(opened)) {
    if (expected !== undefined && expected !== opened.length) throw ErrInvalidArgument(`body is ${opened.length} bytes, declared ${expected}`);
    out = Readable.from([opened], { objectMode: false });
  } else {
    // pipeline forwards a source failure into the check stream, where the consumer sees it.
    out = pipeline(opened, new LengthCheck(expected), () => undefined);
  }
  return signal === undefined ? out : addAbortSignal(signal, out);
}

/** Reads a whole stream into one Buffer (for small objects and tests). */
export async function readAll(stream: AsyncIterable<Buffer | Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  return Buffer.concat(parts);
}

/** Regroups a byte stream into Buffers of exactly size bytes (the last may be shorter, none empty). */
export async function* rechunk(stream: AsyncIterable<Buffer | Uint8Array>, size: number): AsyncIterable<Buffer> {
  let parts: Buffer[] = [];
  let held = 0;
  for await (const piece of stream) {
    let chunk = Buffer.isBuffer(piece) ? piece : Buffer.from(piece);
    while (held + chunk.length >= size) {
      const take = size - held;
      parts.push(chunk.subarray(0, take));
      yield Buffer.concat(parts);
      chunk = chunk.subarray(take);
      parts = [];
      held = 0;
    }
    if (chunk.length > 0) {
      parts.push(chunk);
      held += chunk.length;
    }
  }
  if (held > 0) yield Buffer.concat(parts);
}
