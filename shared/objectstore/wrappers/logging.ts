/**
 * withLogging: one line per request to a pino-compatible logger: debug on success (op, key, bytes,
 * ms), warn on failure (op, key, ms, code, message). It never logs credentials, grant URLs or any
 * URL's query string: a grant is logged by key, operation and expiry only, and error messages pass
 * through redactSecrets first.
 */
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import { isLifeboatError } from '../../errors.js';
import { isAbort } from '../errors.js';
import type { Body, GetOptions, Grant, GrantOptions, ListEntry, ObjectInfo, ObjectStore, PutOptions, SignalOptions } from '../types.js';
import { ForwardingStore, mapBody, mapStream } from './base.js';

/** The part of pino's interface this wrapper uses. */
export interface StoreLogger {
  debug(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

/** Removes query strings from URLs and key material from connection strings. */
export function redactSecrets(text: string): string {
  return text
    .replace(/\b([a-z][a-z0-9+.-]*:\/\/[^\s?#"']*)[?#][^\s"']*/gi, '$1?<redacted>')
    .replace(/\b(AccountKey|SharedAccessSignature|accountKey|secretAccessKey|sessionToken|sig|X-Amz-Signature|X-Amz-Credential)=[^;&\s"']*/g, '$1=<redacted>');
}

/** Counts bytes passing through. */
class Counter extends Transform {
  bytes = 0;

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    done(null, chunk);
  }
}

export function withLogging(store: ObjectStore, logger: StoreLogger): ObjectStore {
  return new LoggingStore(store, logger);
}

class LoggingStore extends ForwardingStore {
  constructor(inner: ObjectStore, private readonly logger: StoreLogger) {
    super(inner);
  }

  private failed(op: string, key: string, started: number, err: unknown): void {
    const code = isLifeboatError(err) ? err.code : isAbort(err) ? 'aborted' : 'bug';
    const message = redactSecrets(err instanceof Error ? err.message : String(err));
    this.logger.warn({ op, key, ms: Math.round(performance.now() - started), code, store: redactSecrets(this.location) }, `object store ${op} failed: ${message}`);
  }

  private async logged<T>(op: string, key: string, call: () => Promise<T>, fields: (result: T) => object = () => ({})): Promise<T> {
    const started = performance.now();
    try {
      const result = await call();
      this.logger.debug({ op, key, ms: Math.round(performance.now() - started), ...fields(result) }, `object store ${op}`);
      return result;
    } catch (err) {
      this.failed(op, key, started, err);
      throw err;
    }
  }

  override put(key: string, body: Body, options: PutOptions = {}): Promise<void> {
    let counter: Counter | undefined;
    const counted = mapBody(body, options.contentLength, () => (counter = new Counter()));
    return this.logged('put', key, () => this.inner.put(key, counted, options), () => ({ bytes: counter?.bytes ?? 0 }));
  }

  override async get(key: string, options?: GetOptions): Promise<Readable> {
    const started = performance.now();
    const stream = await this.logged('get', key, () => this.inner.get(key, options), () => ({ range: options?.range }));
    const counter = new Counter();
    const out = mapStream(stream, counter);
    out.once('error', (err) => this.failed('get', key, started, err));
    out.once('end', () => this.logger.debug({ op: 'get', key, bytes: counter.bytes, ms: Math.round(performance.now() - started) }, 'object store get body read'));
    return out;
  }

  override head(key: string, options?: SignalOptions): Promise<ObjectInfo> {
    return this.logged('head', key, () => this.inner.head(key, options), (info) => ({ size: info.size }));
  }

  override delete(key: string, options?: SignalOptions): Promise<void> {
    return this.logged('delete', key, () => this.inner.delete(key, options));
  }

  override grant(key: string, options: GrantOptions): Promise<Grant> {
    return this.logged('grant', key, () => this.inner.grant(key, options), (g) => ({ operation: options.operation, expiresAt: g.expiresAt.toISOString() }));
  }

  override async *list(prefix: string, options?: SignalOptions): AsyncIterable<ListEntry> {
    const started = performance.now();
    let count = 0;
    try {
      for await (const entry of this.inner.list(prefix, options)) {
        count++;
        yield entry;
      }
      this.logger.debug({ op: 'list', key: prefix, count, ms: Math.round(performance.now() - started) }, 'object store list');
    } catch (err) {
      this.failed('list', prefix, started, err);
      throw err;
    }
  }
}
