/**
 * withConcurrencyLimit: at most maxInFlight requests at once through this store. A put holds its
 * slot until it settles; a get until its stream closes (read it to the end or destroy it, or the
 * slot is never returned); a list only while it waits for each entry, so a caller may read objects
 * while listing. Waiting callers are served in order and may give up through their signal.
 */
import type { Readable } from 'node:stream';
import { ErrInvalidArgument } from '../../errors.js';
import type { Body, GetOptions, Grant, GrantOptions, ListEntry, ObjectInfo, ObjectStore, PutOptions, SignalOptions } from '../types.js';
import { ForwardingStore } from './base.js';

/** A counting semaphore with FIFO waiters. */
export class Semaphore {
  private inUse = 0;
  private readonly waiters: Array<() => void> = [];

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 1) throw ErrInvalidArgument(`concurrency limit must be a positive integer, got ${size}`);
  }

  get active(): number {
    return this.inUse;
  }

  async acquire(signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted();
    if (this.inUse < this.size) {
      this.inUse++;
    } else {
      await new Promise<void>((resolve, reject) => {
        const wake = () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = () => {
          this.waiters.splice(this.waiters.indexOf(wake), 1);
          reject(signal?.reason);
        };
        this.waiters.push(wake);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      if (next) next(); // the slot passes straight to the next waiter
      else this.inUse--;
    };
  }
}

export function withConcurrencyLimit(store: ObjectStore, options: { maxInFlight: number }): ObjectStore {
  return new LimitedStore(store, new Semaphore(options.maxInFlight));
}

class LimitedStore extends ForwardingStore {
  constructor(inner: ObjectStore, private readonly slots: Semaphore) {
    super(inner);
  }

  private async holding<T>(signal: AbortSignal | undefined, call: () => Promise<T>): Promise<T> {
    const release = await this.slots.acquire(signal);
    try {
      return await call();
    } finally {
      release();
    }
  }

  override put(key: string, body: Body, options?: PutOptions): Promise<void> {
    return this.holding(options?.signal, () => this.inner.put(key, body, options));
  }

  override async get(key: string, options?: GetOptions): Promise<Readable> {
    const release = await this.slots.acquire(options?.signal);
    try {
      const stream = await this.inner.get(key, options);
      stream.once('close', release);
      return stream;
    } catch (err) {
      release();
      throw err;
    }
  }

  override head(key: string, options?: SignalOptions): Promise<ObjectInfo> {
    return this.holding(options?.signal, () => this.inner.head(key, options));
  }

  override delete(key: string, options?: SignalOptions): Promise<void> {
    return this.holding(options?.signal, () => this.inner.delete(key, options));
  }

  override grant(key: string, options: GrantOptions): Promise<Grant> {
    return this.holding(undefined, () => this.inner.grant(key, options));
  }

  override async *list(prefix: string, options?: SignalOptions): AsyncIterable<ListEntry> {
    const it = this.inner.list(prefix, options)[Symbol.asyncIterator]();
    try {
      for (;;) {
        const next = await this.holding(options?.signal, () => it.next());
        if (next.done) return;
        yield next.value;
      }
    } finally {
      await it.return?.();
    }
  }
}
