/**
 * What every wrapper shares: a store that forwards everything to the one it wraps (a wrapper
 * overrides only what it changes), and the two ways a wrapper reaches into the bytes: a put's body
 * re-piped through a Transform, and a get's stream piped through one.
 */
import { Readable, pipeline } from 'node:stream';
import type { Transform } from 'node:stream';
import { declaredLength, isReplayable, openBody } from '../body.js';
import type { Body, GetOptions, Grant, GrantOptions, ListEntry, ObjectInfo, ObjectStore, PutOptions, SignalOptions } from '../types.js';

export class ForwardingStore implements ObjectStore {
  constructor(protected readonly inner: ObjectStore) {}

  get location(): string {
    return this.inner.location;
  }

  put(key: string, body: Body, options?: PutOptions): Promise<void> {
    return this.inner.put(key, body, options);
  }

  get(key: string, options?: GetOptions): Promise<Readable> {
    return this.inner.get(key, options);
  }

  head(key: string, options?: SignalOptions): Promise<ObjectInfo> {
    return this.inner.head(key, options);
  }

  list(prefix: string, options?: SignalOptions): AsyncIterable<ListEntry> {
    return this.inner.list(prefix, options);
  }

  delete(key: string, options?: SignalOptions): Promise<void> {
    return this.inner.delete(key, options);
  }

  grant(key: string, options: GrantOptions): Promise<Grant> {
    return this.inner.grant(key, options);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/**
 * The body with its bytes passed through a fresh transform on every read. A re-readable body stays
 * re-readable (a BodyFactory that opens it again each call, carrying its length); a one-shot stream
 * stays a one-shot stream, so a retry wrapper above still knows it must spool it.
 */
export function mapBody(body: Body, contentLength: number | undefined, makeTransform: () => Transform): Body {
  const open = () => {
    const opened = openBody(body);
    const source = Buffer.isBuffer(opened) ? Readable.from([opened], { objectMode: false }) : opened;
    return pipeline(source, makeTransform(), () => undefined);
  };
  if (!isReplayable(body)) return open();
  const length = declaredLength(body, contentLength);
  return length === undefined ? open : Object.assign(open, { contentLength: length });
}

/** A get's stream passed through a transform; destroying the result destroys the source. */
export function mapStream(stream: Readable, transform: Transform): Readable {
  return pipeline(stream, transform, () => undefined);
}
