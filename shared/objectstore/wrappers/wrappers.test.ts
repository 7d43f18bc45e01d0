import { createHash, randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratchDir } from '../../../test/helpers.js';
import { LifeboatError } from '../../errors.js';
import { readAll } from '../body.js';
import { streamOf } from '../conformance.js';
import { FileStore } from '../file.js';
import type { ObjectStore } from '../types.js';
import { ForwardingStore } from './base.js';
import { RetryBudget, Semaphore, TokenBucket, redactSecrets, seededRandom, withBandwidthLimit, withConcurrencyLimit, withFaults, withLogging, withRetry, withTimeout } from './index.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const noSleep = async () => undefined;

let dir: { path: string; remove: () => Promise<void> };
let store: FileStore;
beforeAll(async () => {
  dir = await scratchDir('lifeboat-wrappers-');
  store = new FileStore(`${dir.path}/objects`, { grant: { grantBaseUrl: 'https://dr.example/v1/objects', signingKey: randomBytes(32) } });
});
afterAll(() => dir.remove());

/** Counts calls reaching the wrapped store and the most puts in flight at once. */
class Counting extends ForwardingStore {
  calls = 0;
  inFlight = 0;
  maxInFlight = 0;
  override async put(...args: Parameters<ObjectStore['put']>) {
    this.calls++;
    this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
    try {
      return await super.put(...args);
    } finally {
      this.inFlight--;
    }
  }
  override head(...args: Parameters<ObjectStore['head']>) {
    this.calls++;
    return super.head(...args);
  }
}

/** A fake standing for a backend that accepts requests and never answers (a hung connection). */
class Stalled extends ForwardingStore {
  override head(_key: string, options?: { signal?: AbortSignal }) {
    return new Promise<never>((_, reject) => options?.signal?.addEventListener('abort', () => reject(options.signal?.reason)));
  }
  /** A download that sends some bytes and then nothing more. */
  override async get() {
    const stream = new Readable({ read() {} });
    stream.push(Buffer.alloc(1000));
    return stream;
  }
}

/** A fake standing for a backend whose listing connection drops once, after two entries. */
class DroppingList extends ForwardingStore {
  dropped = false;
  override async *list(prefix: string) {
    let n = 0;
    for await (const e of super.list(prefix)) {
      if (n++ === 2 && !this.dropped) {
        this.dropped = true;
        throw new LifeboatError('unavailable', `list ${prefix}: connection reset`);
      }
      yield e;
    }
  }
}

describe('withRetry', () => {
  it('gets puts, gets and heads through a store that fails a third of requests', async () => {
    const faulty = withFaults(store, { seed: 7, failRate: 0.33 });
    const s = withRetry(faulty, { sleep: noSleep, attempts: 20 });
    const data = randomBytes(50_000);
    for (let i = 0; i < 20; i++) await s.put(`retry/a${i}`, data);
    for (let i = 0; i < 20; i++) expect(sha(await readAll(await s.get(`retry/a${i}`)))).toBe(sha(data));
    expect((await s.head('retry/a0')).size).toBe(data.length);
    expect(faulty.stats.failed).toBeGreaterThan(5);
  });

  it('does not retry what cannot succeed (not_found, invalid keys)', async () => {
    const counting = new Counting(store);
    const s = withRetry(counting, { sleep: noSleep });
    await expect(s.head('retry/missing')).rejects.toMatchObject({ code: 'not_found' });
    expect(counting.calls).toBe(1);
  });

  it('backs off with full jitter under the cap and stops when the budget is spent', async () => {
    const delays: number[] = [];
    const budget = new RetryBudget(3, 0.1);
    const s = withRetry(withFaults(store, { seed: 1, failRate: 1 }), { sleep: noSleep, attempts: 10, baseDelayMs: 100, maxDelayMs: 250, random: () => 0.999, budget, onRetry: (r) => delays.push(r.delayMs) });
    await expect(s.head('retry/a0')).rejects.toMatchObject({ code: 'unavailable' });
    expect(delays).toEqual([99, 199, 249]);
    expect(budget.available).toBeLessThan(1);
  });

  it('spools a one-shot stream so every attempt sends the same bytes, and removes the spool', async () => {
    const spool = `${dir.path}/spool`;
    await import('node:fs/promises').then((fs) => fs.mkdir(spool));
    const faulty = withFaults(store, { seed: 3, cutRate: 0.6, operations: ['put'] });
    const s = withRetry(faulty, { sleep: noSleep, attempts: 30, spoolDir: spool });
    const data = randomBytes(3 * 1024 * 1024);
    await s.put('retry/spooled', streamOf(data));
    expect(sha(await readAll(await store.get('retry/spooled')))).toBe(sha(data));
    expect(faulty.stats.cutUploads).toBeGreaterThan(0);
    expect(await readdir(spool)).toEqual([]);
  });

  it('resumes a download cut midway from the next byte, whole and ranged', async () => {
    const data = randomBytes(2 * 1024 * 1024);
    await store.put('retry/download', data);
    const faulty = withFaults(store, { seed: 11, cutRate: 0.7, operations: ['get'] });
    const s = withRetry(faulty, { sleep: noSleep, attempts: 50 });
    for (let i = 0; i < 5; i++) expect(sha(await readAll(await s.get('retry/download')))).toBe(sha(data));
    const part = await readAll(await s.get('retry/download', { range: { offset: 1000, length: 1_500_000 } }));
    expect(sha(part)).toBe(sha(data.subarray(1000, 1_501_000)));
    expect(faulty.stats.cutDownloads).toBeGreaterThan(2);
  });
});

describe('withRetry listings', () => {
  it('starts a listing cut midway again and yields each key once, in order', async () => {
    for (let i = 0; i < 5; i++) await store.put(`listing/k${i}`, Buffer.from('x'));
    const dropping = new DroppingList(store);
    const keys = [];
    for await (const e of withRetry(dropping, { sleep: noSleep }).list('listing/')) keys.push(e.key);
    expect(dropping.dropped).toBe(true);
    expect(keys).toEqual([0, 1, 2, 3, 4].map((i) => `listing/k${i}`));
  });
});

describe('withTimeout', () => {
  it('fails a request that gets no answer as unavailable, which withRetry retries', async () => {
    const counting = new Counting(new Stalled(store));
    await expect(withTimeout(counting, { timeoutMs: 20 }).head('x')).rejects.toMatchObject({ code: 'unavailable', message: expect.stringContaining('timed out') });
    await expect(withRetry(withTimeout(counting, { timeoutMs: 20 }), { sleep: noSleep, attempts: 3 }).head('x')).rejects.toMatchObject({ code: 'unavailable' });
    expect(counting.calls).toBe(4);
  });

  it('fails a download that stops moving', async () => {
    const stream = await withTimeout(new Stalled(store), { idleMs: 20 }).get('x');
    await expect(readAll(stream)).rejects.toMatchObject({ code: 'unavailable', message: expect.stringContaining('timed out') });
  });

  it('aborts a put whose body stalls, leaving nothing behind', async () => {
    const stalled = (async function* () {
      yield randomBytes(1000);
      await new Promise(() => undefined);
    })();
    await expect(withTimeout(store, { idleMs: 30 }).put('timeout/stalled', stalled)).rejects.toMatchObject({ code: 'unavailable' });
    await expect(store.head('timeout/stalled')).rejects.toMatchObject({ code: 'not_found' });
  });

  it('leaves healthy transfers alone', async () => {
    const s = withTimeout(store, { timeoutMs: 5000, idleMs: 5000 });
    const data = randomBytes(100_000);
    await s.put('timeout/ok', streamOf(data));
    expect(sha(await readAll(await s.get('timeout/ok')))).toBe(sha(data));
  });
});

describe('withConcurrencyLimit', () => {
  it('never lets more than the limit through at once', async () => {
    const counting = new Counting(store);
    const s = withConcurrencyLimit(counting, { maxInFlight: 2 });
    await Promise.all(Array.from({ length: 12 }, (_, i) => s.put(`limit/${i}`, randomBytes(10_000))));
    expect(counting.maxInFlight).toBeLessThanOrEqual(2);
    const keys = [];
    for await (const e of s.list('limit/')) keys.push(e.key);
    expect(keys).toHaveLength(12);
  });

  it('hands a released slot to the first waiter; an aborted waiter leaves the queue', async () => {
    const sem = new Semaphore(1);
    const release = await sem.acquire();
    const order: string[] = [];
    const controller = new AbortController();
    const a = sem.acquire(controller.signal).then(() => order.push('a'), () => order.push('a aborted'));
    const b = sem.acquire().then((r) => { order.push('b'); r(); });
    controller.abort();
    await a;
    release();
    await b;
    expect(order).toEqual(['a aborted', 'b']);
    expect(sem.active).toBe(0);
  });
});

describe('withBandwidthLimit', () => {
  it('paces put and get bodies to the configured rate (measured on a fake clock)', async () => {
    let now = 0;
    const clock = { now: () => now, sleep: async (ms: number) => { now += ms; } };
    const s = withBandwidthLimit(store, { putBytesPerSecond: 256 * 1024, getBytesPerSecond: 512 * 1024, burstBytes: 64 * 1024, clock });
    const data = randomBytes(1024 * 1024);
    await s.put('bandwidth/x', data);
    // The first 64 KiB pass on the initial burst; the rest at 256 KiB/s.
    expect(now).toBeCloseTo(((1024 - 64) / 256) * 1000, -1);
    const before = now;
    expect(sha(await readAll(await s.get('bandwidth/x')))).toBe(sha(data));
    expect(now - before).toBeCloseTo(((1024 - 64) / 512) * 1000, -1);
  });

  it('refills at the rate and never beyond the burst', async () => {
    let now = 0;
    const bucket = new TokenBucket(1000, 500, { now: () => now, sleep: async (ms) => { now += ms; } });
    await bucket.take(500);
    now += 10_000; // a long idle period refills only up to the burst
    await bucket.take(500);
    expect(now).toBe(10_000);
    await bucket.take(250);
    expect(now).toBe(10_250);
  });
});

describe('withFaults', () => {
  it('is deterministic for a seed', async () => {
    const run = async (seed: number) => {
      const f = withFaults(store, { seed, failRate: 0.5 });
      const outcome: boolean[] = [];
      for (let i = 0; i < 40; i++) outcome.push(await f.head('retry/a0').then(() => true, () => false));
      return outcome;
    };
    expect(await run(5)).toEqual(await run(5));
    expect(await run(5)).not.toEqual(await run(6));
    expect(seededRandom(1)()).toBe(seededRandom(1)());
  });

  it('cuts an upload so the store never commits it', async () => {
    const f = withFaults(store, { seed: 2, cutRate: 1 });
    await expect(f.put('faults/cut', randomBytes(100_000))).rejects.toMatchObject({ code: 'unavailable', message: expect.stringContaining('injected fault') });
    await expect(store.head('faults/cut')).rejects.toMatchObject({ code: 'not_found' });
    expect(f.stats.cutUploads).toBe(1);
  });
});

describe('withLogging', () => {
  it('logs operations by key without grant URLs, signatures or credentials', async () => {
    const lines: Array<{ level: string; obj: object; msg?: string }> = [];
    const logger = { debug: (obj: object, msg?: string) => lines.push({ level: 'debug', obj, msg }), warn: (obj: object, msg?: string) => lines.push({ level: 'warn', obj, msg }) };
    const s = withLogging(store, logger);
    await s.put('logging/x', Buffer.from('hello'));
    await readAll(await s.get('logging/x'));
    const grant = await s.grant('logging/x', { operation: 'get', expiresIn: 60 });
    await expect(s.head('logging/missing')).rejects.toThrow();
    const text = JSON.stringify(lines);
    expect(text).not.toContain(new URL(grant.url).searchParams.get('sig'));
    expect(text).not.toContain('sig=');
    expect(lines.find((l) => (l.obj as { op: string }).op === 'put')?.obj).toMatchObject({ key: 'logging/x', bytes: 5 });
    expect(lines.find((l) => l.level === 'warn')?.obj).toMatchObject({ op: 'head', code: 'not_found' });
  });

  it('redacts query strings and key material from messages', () => {
    const text = 'PUT https://acct.blob.core.windows.net/c/k?sv=2024&sig=abc%2B failed; AccountKey=c2VjcmV0; s3://b/p?secretAccessKey=xyz';
    const out = redactSecrets(text);
    expect(out).not.toMatch(/abc|c2VjcmV0|xyz/);
    expect(out).toContain('https://acct.blob.core.windows.net/c/k?<redacted>');
  });
});
