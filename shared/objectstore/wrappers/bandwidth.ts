/**
 * withBandwidthLimit: a token bucket over the bytes of put and get bodies passing through this
 * store, shared by every transfer (uploads and downloads each have their own bucket). A chunk waits
 * until the bucket holds its bytes; chunks larger than the burst are cut to it first. Requests
 * without bodies are not limited.
 */
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import { ErrInvalidArgument } from '../../errors.js';
import type { Body, GetOptions, ObjectStore, PutOptions } from '../types.js';
import { ForwardingStore, mapBody, mapStream } from './base.js';

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/** Tokens are bytes; they accrue at bytesPerSecond up to burstBytes. Waiters are served in order. */
export class TokenBucket {
  private tokens: number;
  private last: number;
  private queue: Promise<void> = Promise.resolve();

  constructor(readonly bytesPerSecond: number, readonly burstBytes: number, private readonly clock: Clock = realClock) {
    if (!(bytesPerSecond > 0) || !(burstBytes >= 1)) throw ErrInvalidArgument('bandwidth limit needs bytesPerSecond > 0 and burstBytes >= 1');
    this.tokens = burstBytes;
    this.last = clock.now();
  }

  /** Resolves when n bytes (at most burstBytes) may pass. */
  take(n: number): Promise<void> {
    const turn = this.queue.then(async () => {
      this.refill();
      if (this.tokens < n) {
        await this.clock.sleep(((n - this.tokens) / this.bytesPerSecond) * 1000);
        this.refill();
      }
      this.tokens -= n;
    });
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  private refill(): void {
    const now = this.clock.now();
    this.tokens = Math.min(this.burstBytes, this.tokens + ((now - this.last) / 1000) * this.bytesPerSecond);
    this.last = now;
  }
}

/** Passes bytes through at the bucket's pace, in pieces of at most its burst. */
class Throttle extends Transform {
  constructor(private readonly bucket: TokenBucket) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    void (async () => {
      for (let at = 0; at < chunk.length; at += this.bucket.burstBytes) {
        const piece = chunk.subarray(at, at + this.bucket.burstBytes);
        await this.bucket.take(piece.length);
        this.push(piece);
      }
    })().then(() => done(), done);
  }
}

export interface BandwidthOptions {
  /** Upload limit in bytes per second (unlimited when absent). */
  putBytesPerSecond?: number;
  /** Download limit in bytes per second (unlimited when absent). */
  getBytesPerSecond?: number;
  /** Largest burst in bytes (default one second's worth, at least 64 KiB). */
  burstBytes?: number;
  clock?: Clock;
}

export function withBandwidthLimit(store: ObjectStore, options: BandwidthOptions): ObjectStore {
  const bucket = (rate: number | undefined) => rate === undefined ? undefined : new TokenBucket(rate, options.burstBytes ?? Math.max(64 * 1024, rate), options.clock);
  return new ThrottledStore(store, bucket(options.putBytesPerSecond), bucket(options.getBytesPerSecond));
}

/** The stream's bytes at the bucket's pace (the stream itself when there is no bucket). */
export function paced(stream: Readable, bucket: TokenBucket | undefined): Readable {
  return bucket === undefined ? stream : mapStream(stream, new Throttle(bucket));
}

class ThrottledStore extends ForwardingStore {
  constructor(inner: ObjectStore, private readonly up: TokenBucket | undefined, private readonly down: TokenBucket | undefined) {
    super(inner);
  }

  override put(key: string, body: Body, options: PutOptions = {}): Promise<void> {
    const up = this.up;
    if (up === undefined) return this.inner.put(key, body, options);
    return this.inner.put(key, mapBody(body, options.contentLength, () => new Throttle(up)), options);
  }

  override async get(key: string, options?: GetOptions): Promise<Readable> {
    const stream = await this.inner.get(key, options);
    return paced(stream, this.down);
  }
}
