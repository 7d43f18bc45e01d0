/**
 * withFaults: deterministic fault injection for tests and drills. From a seed it decides, request
 * by request, whether to fail the request before it reaches the store (failRate) and whether to cut
 * a put's body or a get's stream after a random number of bytes (cutRate), the way a dropped
 * connection does. Every injected fault is LifeboatError 'unavailable' with "injected fault" in its
 * message, and counted in stats so a test can show that faults really happened.
 */
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import { ErrInvalidArgument } from '../../errors.js';
import { declaredLength } from '../body.js';
import { ErrUnavailable } from '../errors.js';
import type { Body, GetOptions, Grant, GrantOptions, ListEntry, ObjectInfo, ObjectStore, PutOptions, SignalOptions } from '../types.js';
import { ForwardingStore, mapBody, mapStream } from './base.js';
import { seededRandom } from '../../random.js';

export type FaultOperation = 'put' | 'get' | 'head' | 'list' | 'delete' | 'grant';

export interface FaultOptions {
  seed: number;
  /** Share of requests (0..1) failed before they reach the store. */
  failRate?: number;
  /** Share of put bodies and get streams (0..1) cut midway. */
  cutRate?: number;
  /** Operations faults apply to (default all). */
  operations?: FaultOperation[];
  /** Where in a body of unknown length the cut may fall (default 1 MiB). */
  cutWithinBytes?: number;
}

export interface FaultStats {
  requests: number;
  failed: number;
  cutUploads: number;
  cutDownloads: number;
}

/** Passes cutAt bytes through, then fails like a dropped connection. */
class Cut extends Transform {
  private seen = 0;

  constructor(private readonly cutAt: number, private readonly what: string, private readonly onCut: () => void) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.seen + chunk.length <= this.cutAt) {
      this.seen += chunk.length;
      done(null, chunk);
      return;
    }
    this.push(chunk.subarray(0, this.cutAt - this.seen));
    this.onCut();
    done(ErrUnavailable(`${this.what}: injected fault: connection cut after ${this.cutAt} bytes`));
  }
}

export type FaultyStore = ObjectStore & { readonly stats: FaultStats };

export function withFaults(store: ObjectStore, options: FaultOptions): FaultyStore {
  for (const rate of [options.failRate ?? 0, options.cutRate ?? 0]) {
    if (!(rate >= 0 && rate <= 1)) throw ErrInvalidArgument(`fault rates must be between 0 and 1, got ${rate}`);
  }
  return new FaultInjectingStore(store, options);
}

class FaultInjectingStore extends ForwardingStore {
  readonly stats: FaultStats = { requests: 0, failed: 0, cutUploads: 0, cutDownloads: 0 };
  private readonly random: () => number;

  constructor(inner: ObjectStore, private readonly options: FaultOptions) {
    super(inner);
    this.random = seededRandom(options.seed);
  }

  private applies(op: FaultOperation): boolean {
    return this.options.operations === undefined || this.options.operations.includes(op);
  }

  /** Counts the request and throws an injected failure for failRate of them. */
  private gate(op: FaultOperation, key: string): void {
    this.stats.requests++;
    if (this.applies(op) && this.random() < (this.options.failRate ?? 0)) {
      this.stats.failed++;
      throw ErrUnavailable(`${op} ${key}: injected fault: request failed`);
    }
  }

  /** Where to cut a body of length bytes, or undefined to leave it whole. */
  private cutPoint(op: FaultOperation, length: number | undefined): number | undefined {
    if (!this.applies(op) || this.random() >= (this.options.cutRate ?? 0)) return undefined;
    return Math.floor(this.random() * (length ?? this.options.cutWithinBytes ?? 1024 * 1024));
  }

  override async put(key: string, body: Body, options: PutOptions = {}): Promise<void> {
    this.gate('put', key);
    const cutAt = this.cutPoint('put', declaredLength(body, options.contentLength));
    if (cutAt === undefined) return this.inner.put(key, body, options);
    const cut = mapBody(body, options.contentLength, () => new Cut(cutAt, `put ${key}`, () => this.stats.cutUploads++));
    return this.inner.put(key, cut, options);
  }

  override async get(key: string, options?: GetOptions): Promise<Readable> {
    this.gate('get', key);
    const stream = await this.inner.get(key, options);
    const cutAt = this.cutPoint('get', options?.range?.length);
    return cutAt === undefined ? stream : mapStream(stream, new Cut(cutAt, `get ${key}`, () => this.stats.cutDownloads++));
  }

  override async head(key: string, options?: SignalOptions): Promise<ObjectInfo> {
    this.gate('head', key);
    return this.inner.head(key, options);
  }

  override async *list(prefix: string, options?: SignalOptions): AsyncIterable<ListEntry> {
    this.gate('list', prefix);
    yield* this.inner.list(prefix, options);
  }

  override async delete(key: string, options?: SignalOptions): Promise<void> {
    this.gate('delete', key);
    return this.inner.delete(key, options);
  }

  override async grant(key: string, options: GrantOptions): Promise<Grant> {
    this.gate('grant', key);
    return this.inner.grant(key, options);
  }
}
