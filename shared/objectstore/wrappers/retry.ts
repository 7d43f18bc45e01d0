/**
 * withRetry: retries what failed with a retryable error (LifeboatError 'unavailable': network
 * failures, 5xx, throttling, timeouts) with exponential backoff and full jitter, within a retry
 * budget shared by every call (so a dead backend is not hammered by every caller at once).
 *
 * - put: a Buffer or BodyFactory is sent again as it is; a one-shot stream is first spooled to a
 *   temporary file (mode 0600, in spoolDir, removed afterwards) and every attempt reads that file.
 * - get: the request is retried; a stream cut midway is resumed with a ranged get for the bytes not
 *   yet delivered (lifeboat's objects are write-once, so the rest belongs to the same object).
 * - list: a listing cut midway starts again and skips keys already yielded (keys come in order).
 * Aborts by the caller are never retried.
 */
import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isLifeboatError } from '../../errors.js';
import { checkedStream, isReplayable } from '../body.js';
import { isRetryable, storeError } from '../errors.js';
import type { Body, GetOptions, Grant, GrantOptions, ListEntry, ObjectInfo, ObjectStore, PutOptions, SignalOptions } from '../types.js';
import { ForwardingStore } from './base.js';

export const DefaultAttempts = 5;
export const DefaultBaseDelayMs = 100;
export const DefaultMaxDelayMs = 20_000;

/**
 * A token bucket of retries: each retry takes one token, each success puts back refillPerSuccess
 * (up to capacity). With no whole token left, failures are returned at once.
 */
export class RetryBudget {
  private tokens: number;

  constructor(readonly capacity = 50, readonly refillPerSuccess = 0.1) {
    this.tokens = capacity;
  }

  get available(): number {
    return this.tokens;
  }

  tryTake(): boolean {
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  succeeded(): void {
    this.tokens = Math.min(this.capacity, this.tokens + this.refillPerSuccess);
  }
}

export interface RetryOptions {
  /** Tries per operation, the first included (default 5). */
  attempts?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Shared between stores to bound retries across a process (default: one per wrapper). */
  budget?: RetryBudget;
  /** Where one-shot put bodies are spooled (default the OS temp directory). */
  spoolDir?: string;
  /** Uniform in [0, 1) for jitter (tests pass a seeded one). */
  random?: () => number;
  /** Waits ms unless signal aborts (tests pass one that does not wait). */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Told about each retry, e.g. to log or count it. */
  onRetry?: (info: { op: string; key: string; attempt: number; delayMs: number; error: unknown }) => void;
}

function realSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    signal?.throwIfAborted();
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export function withRetry(store: ObjectStore, options: RetryOptions = {}): ObjectStore {
  return new RetryingStore(store, options);
}

class RetryingStore extends ForwardingStore {
  private readonly attempts: number;
  private readonly budget: RetryBudget;

  constructor(inner: ObjectStore, private readonly options: RetryOptions) {
    super(inner);
    this.attempts = options.attempts ?? DefaultAttempts;
    this.budget = options.budget ?? new RetryBudget();
  }

  /** Full jitter: uniform in [0, min(max, base·2^attempt)). */
  private delayFor(attempt: number): number {
    const cap = Math.min(this.options.maxDelayMs ?? DefaultMaxDelayMs, (this.options.baseDelayMs ?? DefaultBaseDelayMs) * 2 ** (attempt - 1));
    return Math.floor((this.options.random ?? Math.random)() * cap);
  }

  /** After failure number `attempt`: waits and returns true if another try is allowed. */
  private async mayRetry(op: string, key: string, attempt: number, error: unknown, signal?: AbortSignal): Promise<boolean> {
    if (!isRetryable(error) || signal?.aborted || attempt >= this.attempts || !this.budget.tryTake()) return false;
    const delayMs = this.delayFor(attempt);
    this.options.onRetry?.({ op, key, attempt, delayMs, error });
    await (this.options.sleep ?? realSleep)(delayMs, signal);
    return true;
  }

  private async run<T>(op: string, key: string, signal: AbortSignal | undefined, call: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        const result = await call();
        this.budget.succeeded();
        return result;
      } catch (err) {
        if (!(await this.mayRetry(op, key, attempt, err, signal))) throw err;
      }
    }
  }

  override async put(key: string, body: Body, options: PutOptions = {}): Promise<void> {
    if (isReplayable(body)) return this.run('put', key, options.signal, () => this.inner.put(key, body, options));
    const dir = await mkdtemp(join(this.options.spoolDir ?? tmpdir(), 'lifeboat-spool-'));
    try {
      const file = join(dir, randomUUID());
      await pipeline(checkedStream(body, options.contentLength), createWriteStream(file, { mode: 0o600 }), { signal: options.signal });
      const { size } = await stat(file);
      const replay = Object.assign(() => createReadStream(file), { contentLength: size });
      await this.run('put', key, options.signal, () => this.inner.put(key, replay, { ...options, contentLength: size }));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  override async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const first = await this.run('get', key, options.signal, () => this.inner.get(key, options));
    return Readable.from(this.resume(key, options, first), { objectMode: false });
  }

  /** Yields the object's bytes, reopening the rest of the range after a retryable cut. */
  private async *resume(key: string, options: GetOptions, first: Readable): AsyncGenerator<Buffer> {
    const start = options.range?.offset ?? 0;
    const wanted = options.range?.length;
    let delivered = 0;
    let stream = first;
    for (let attempt = 1; ; ) {
      try {
        for await (const chunk of stream) {
          delivered += (chunk as Buffer).length;
          yield chunk as Buffer;
        }
        this.budget.succeeded();
        return;
      } catch (err) {
        const mapped = isLifeboatError(err) ? err : storeError(`get ${key}`, err);
        if (!(await this.mayRetry('get', key, attempt++, mapped, options.signal))) throw mapped;
      }
      if (wanted !== undefined && delivered >= wanted) return;
      const range = { offset: start + delivered, length: wanted === undefined ? Number.MAX_SAFE_INTEGER - start - delivered : wanted - delivered };
      try {
        stream = await this.run('get', key, options.signal, () => this.inner.get(key, { ...options, range }));
      } catch (err) {
        // The cut came after the last byte: there is nothing left to read.
        if (wanted === undefined && isLifeboatError(err) && err.status === 416) return;
        throw err;
      }
    }
  }

  override async head(key: string, options: SignalOptions = {}): Promise<ObjectInfo> {
    return this.run('head', key, options.signal, () => this.inner.head(key, options));
  }

  override async *list(prefix: string, options: SignalOptions = {}): AsyncIterable<ListEntry> {
    let last: string | undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        for await (const entry of this.inner.list(prefix, options)) {
          if (last !== undefined && entry.key <= last) continue;
          last = entry.key;
          yield entry;
        }
        this.budget.succeeded();
        return;
      } catch (err) {
        if (!(await this.mayRetry('list', prefix, attempt, err, options.signal))) throw err;
      }
    }
  }

  override async delete(key: string, options: SignalOptions = {}): Promise<void> {
    return this.run('delete', key, options.signal, () => this.inner.delete(key, options));
  }

  override async grant(key: string, options: GrantOptions): Promise<Grant> {
    return this.run('grant', key, undefined, () => this.inner.grant(key, options));
  }
}
