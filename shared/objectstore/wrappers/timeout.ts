/**
 * withTimeout: bounds how long a request may wait. Calls without a body (head, delete, grant, each
 * page of a list, a get until its stream starts) fail after timeoutMs; bodies (a put's upload, a
 * get's download) fail when no byte has moved for idleMs, however long the whole transfer takes.
 * A timeout is LifeboatError 'unavailable' ("timed out"), so withRetry above retries it; the
 * request is aborted through its signal so nothing keeps running behind it.
 */
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import { ErrUnavailable } from '../errors.js';
import type { Body, GetOptions, Grant, GrantOptions, ListEntry, ObjectInfo, ObjectStore, PutOptions, SignalOptions } from '../types.js';
import { ForwardingStore, mapBody, mapStream } from './base.js';

export const DefaultTimeoutMs = 30_000;
export const DefaultIdleMs = 60_000;

export interface TimeoutOptions {
  /** Longest wait for an answer to a request without a body (default 30 s). */
  timeoutMs?: number;
  /** Longest pause in a body transfer (default 60 s). */
  idleMs?: number;
}

export function withTimeout(store: ObjectStore, options: TimeoutOptions = {}): ObjectStore {
  return new TimeoutStore(store, options.timeoutMs ?? DefaultTimeoutMs, options.idleMs ?? DefaultIdleMs);
}

/** A timer that aborts a controller linked to the caller's signal; restartable for idle timeouts. */
class Deadline {
  readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private fired = false;
  private readonly unlink: () => void;

  constructor(private readonly ms: number, private readonly what: string, caller?: AbortSignal) {
    const onAbort = () => this.controller.abort(caller?.reason);
    caller?.addEventListener('abort', onAbort, { once: true });
    this.unlink = () => caller?.removeEventListener('abort', onAbort);
    if (caller?.aborted) this.controller.abort(caller.reason);
    this.restart();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  restart(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.fired = true;
      this.controller.abort(this.error());
    }, this.ms);
  }

  /** Stops the timer; the link to the caller's signal stays. */
  pause(): void {
    clearTimeout(this.timer);
  }

  error(): Error {
    return ErrUnavailable(`${this.what}: timed out after ${this.ms} ms`);
  }

  /** The error to report: ours if the timer fired, else what the request threw. */
  outcome(err: unknown): unknown {
    return this.fired ? this.error() : err;
  }

  clear(): void {
    clearTimeout(this.timer);
    this.unlink();
  }
}

/** Passes bytes through, restarting the deadline on each chunk. */
class Progress extends Transform {
  constructor(private readonly deadline: Deadline) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.deadline.restart();
    done(null, chunk);
  }
}

class TimeoutStore extends ForwardingStore {
  constructor(inner: ObjectStore, private readonly timeoutMs: number, private readonly idleMs: number) {
    super(inner);
  }

  private async bounded<T>(what: string, caller: AbortSignal | undefined, call: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const deadline = new Deadline(this.timeoutMs, what, caller);
    try {
      return await call(deadline.signal);
    } catch (err) {
      throw deadline.outcome(err);
    } finally {
      deadline.clear();
    }
  }

  override async put(key: string, body: Body, options: PutOptions = {}): Promise<void> {
    const deadline = new Deadline(this.idleMs, `put ${key}`, options.signal);
    try {
      const watched = mapBody(body, options.contentLength, () => new Progress(deadline));
      await this.inner.put(key, watched, { ...options, signal: deadline.signal });
    } catch (err) {
      throw deadline.outcome(err);
    } finally {
      deadline.clear();
    }
  }

  override async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const deadline = new Deadline(this.timeoutMs, `get ${key}`, options.signal);
    let stream: Readable;
    try {
      stream = await this.inner.get(key, { ...options, signal: deadline.signal });
    } catch (err) {
      deadline.clear();
      throw deadline.outcome(err);
    }
    // From here the idle bound applies: each chunk restarts the timer; a stall destroys the stream.
    const idle = new Deadline(this.idleMs, `get ${key}`, deadline.signal);
    const out = mapStream(stream, new Progress(idle));
    idle.signal.addEventListener('abort', () => out.destroy(idle.outcome(idle.signal.reason) as Error), { once: true });
    deadline.pause();
    out.once('close', () => {
      idle.clear();
      deadline.clear();
    });
    return out;
  }

  override head(key: string, options: SignalOptions = {}): Promise<ObjectInfo> {
    return this.bounded(`head ${key}`, options.signal, (signal) => this.inner.head(key, { signal }));
  }

  override delete(key: string, options: SignalOptions = {}): Promise<void> {
    return this.bounded(`delete ${key}`, options.signal, (signal) => this.inner.delete(key, { signal }));
  }

  override grant(key: string, options: GrantOptions): Promise<Grant> {
    return this.bounded(`grant ${key}`, undefined, () => this.inner.grant(key, options));
  }

  override async *list(prefix: string, options: SignalOptions = {}): AsyncIterable<ListEntry> {
    const deadline = new Deadline(this.timeoutMs, `list ${prefix}`, options.signal);
    const it = this.inner.list(prefix, { signal: deadline.signal })[Symbol.asyncIterator]();
    try {
      for (;;) {
        deadline.restart();
        let next: IteratorResult<ListEntry>;
        try {
          next = await it.next();
        } catch (err) {
          throw deadline.outcome(err);
        }
        if (next.done) return;
        deadline.pause();
        yield next.value;
      }
    } finally {
      deadline.clear();
      await it.return?.();
    }
  }
}
