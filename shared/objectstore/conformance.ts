/**
 * The one conformance suite every ObjectStore runs (docs/formats/objectstore.md is the contract it
 * checks). An adapter's test file only says how to build the store: objectStoreConformance(name,
 * setup, { mustRun }). A suite that cannot set up is skipped with its reason printed, unless it must
 * run (CI), in which case every case fails with that reason.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestContext } from 'vitest';
import { readAll } from './body.js';
import type { ObjectStore } from './types.js';

export interface ConformanceTarget {
  store: ObjectStore;
  /** Drops the whole backend (an emulator); without one the suite deletes the keys it wrote. */
  teardown?: () => Promise<void>;
  /** Why the backend cannot refuse a grant used for another key or operation (s3rver skips SigV4 checks). */
  grantsUnverified?: string;
  /** Why the backend lists keys in another order than bytes (s3rver walks directories first). */
  listOrderUnreliable?: string;
}

export interface ConformanceOptions {
  /** A skip fails the run instead (emulators in CI). */
  mustRun: boolean;
  /** Known up front: why this target cannot run here (e.g. no credentials in the environment). */
  skipReason?: string;
}

/** Bodies over the multipart/block threshold of every adapter (5 MiB parts on S3). */
export const LargeBodyBytes = 11 * 1024 * 1024 + 123;
const ManyKeys = 1005;

export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Deterministic pseudo-random bytes as a one-shot stream of chunkBytes pieces. */
export function streamOf(data: Buffer, chunkBytes = 64 * 1024): AsyncIterable<Buffer> {
  return (async function* () {
    for (let at = 0; at < data.length; at += chunkBytes) yield data.subarray(at, at + chunkBytes);
  })();
}

async function getBytes(store: ObjectStore, key: string, range?: { offset: number; length: number }): Promise<Buffer> {
  return readAll(await store.get(key, range ? { range } : {}));
}

async function listKeys(store: ObjectStore, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const e of store.list(prefix)) keys.push(e.key);
  return keys;
}

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  await expect(p).rejects.toMatchObject({ name: 'LifeboatError', code });
}

export function objectStoreConformance(name: string, setup: () => Promise<ConformanceTarget>, options: ConformanceOptions): void {
  describe(`object store conformance: ${name}`, () => {
    let target: ConformanceTarget | undefined;
    let unavailable: string | undefined = options.skipReason;
    const ns = `conformance-${randomBytes(4).toString('hex')}/`;

    beforeAll(async () => {
      if (unavailable !== undefined) {
        if (!options.mustRun) console.warn(`skipping object store conformance for ${name}: ${unavailable}`);
        return;
      }
      try {
        target = await setup();
      } catch (err) {
        unavailable = `setup failed: ${(err as Error).message}`;
        if (options.mustRun) throw err;
        console.warn(`skipping object store conformance for ${name}: ${unavailable}`);
      }
    });

    afterAll(async () => {
      if (target === undefined) return;
      const { store, teardown } = target;
      try {
        // Emulators vanish with their teardown; a real bucket is cleaned of this run's keys.
        if (teardown === undefined) {
          const keys: string[] = [];
          for await (const e of store.list(ns)) keys.push(e.key);
          for (let i = 0; i < keys.length; i += 32) await Promise.all(keys.slice(i, i + 32).map((k) => store.delete(k)));
        }
      } finally {
        await store.close();
        await teardown?.();
      }
    });

    /** The store, or a skip (or a failure when the suite must run) naming why there is none. */
    function use(ctx: TestContext): ConformanceTarget {
      if (target !== undefined) return target;
      const why = unavailable ?? 'not set up';
      if (options.mustRun) throw new Error(`${name} must run but cannot: ${why}`);
      return ctx.skip(why);
    }

    it('round-trips empty, small and multi-MiB streamed objects', async (ctx) => {
      const { store } = use(ctx);
      await store.put(`${ns}rt/empty`, Buffer.alloc(0));
      expect((await getBytes(store, `${ns}rt/empty`)).length).toBe(0);
      expect((await store.head(`${ns}rt/empty`)).size).toBe(0);

      const small = Buffer.from('hello, lifeboat\n');
      await store.put(`${ns}rt/small`, small);
      expect(await getBytes(store, `${ns}rt/small`)).toEqual(small);

      const large = randomBytes(LargeBodyBytes);
      await store.put(`${ns}rt/large-iter`, streamOf(large));
      expect(sha256(await getBytes(store, `${ns}rt/large-iter`))).toBe(sha256(large));
      await store.put(`${ns}rt/large-readable`, Readable.from(streamOf(large)), { contentLength: large.length });
      const head = await store.head(`${ns}rt/large-readable`);
      expect(head.size).toBe(large.length);
      expect(head.lastModified).toBeInstanceOf(Date);
      expect(sha256(await getBytes(store, `${ns}rt/large-readable`))).toBe(sha256(large));
      await store.put(`${ns}rt/factory`, Object.assign(() => streamOf(small, 3), { contentLength: small.length }));
      expect(await getBytes(store, `${ns}rt/factory`)).toEqual(small);
    });

    it('serves byte ranges at the start, middle and end, clamps a range running past the end, refuses one starting past it', async (ctx) => {
      const { store } = use(ctx);
      const data = randomBytes(100_000);
      const key = `${ns}range/obj`;
      await store.put(key, data);
      expect(await getBytes(store, key, { offset: 0, length: 10 })).toEqual(data.subarray(0, 10));
      expect(await getBytes(store, key, { offset: 40_000, length: 20_000 })).toEqual(data.subarray(40_000, 60_000));
      expect(await getBytes(store, key, { offset: 99_990, length: 10 })).toEqual(data.subarray(99_990));
      expect(await getBytes(store, key, { offset: 99_990, length: 1000 })).toEqual(data.subarray(99_990));
      await expect(store.get(key, { range: { offset: 100_000, length: 1 } })).rejects.toMatchObject({ code: 'invalid_argument', status: 416 });
      await expect(store.get(key, { range: { offset: 200_000, length: 1 } })).rejects.toMatchObject({ code: 'invalid_argument', status: 416 });
      await expectCode(store.get(key, { range: { offset: 0, length: 0 } }), 'invalid_argument');
      await store.put(`${ns}range/empty`, Buffer.alloc(0));
      await expect(store.get(`${ns}range/empty`, { range: { offset: 0, length: 1 } })).rejects.toMatchObject({ code: 'invalid_argument', status: 416 });
      await expectCode(store.get(key, { range: { offset: -1, length: 5 } }), 'invalid_argument');
    });

    it('reports missing objects as not_found on get and head, and delete is idempotent', async (ctx) => {
      const { store } = use(ctx);
      await expectCode(store.get(`${ns}missing/x`), 'not_found');
      await expectCode(store.head(`${ns}missing/x`), 'not_found');
      await store.delete(`${ns}missing/x`);
      await store.put(`${ns}del/x`, Buffer.from('x'));
      await store.delete(`${ns}del/x`);
      await store.delete(`${ns}del/x`);
      await expectCode(store.head(`${ns}del/x`), 'not_found');
      expect(await listKeys(store, `${ns}del/`)).toEqual([]);
    });

    it('replaces an object on overwrite', async (ctx) => {
      const { store } = use(ctx);
      await store.put(`${ns}ow/x`, Buffer.from('first version'));
      await store.put(`${ns}ow/x`, Buffer.from('second'));
      expect((await getBytes(store, `${ns}ow/x`)).toString()).toBe('second');
      expect((await store.head(`${ns}ow/x`)).size).toBe(6);
    });

    it('leaves nothing visible when a put fails or is aborted midway, and keeps the old object', async (ctx) => {
      const { store } = use(ctx);
      const failing = (async function* () {
        yield randomBytes(6 * 1024 * 1024);
        throw new Error('source failed');
      })();
      await expect(store.put(`${ns}atomic/new`, failing)).rejects.toThrow();
      await expectCode(store.head(`${ns}atomic/new`), 'not_found');
      await expect(store.put(`${ns}atomic/new`, Buffer.from('short'), { contentLength: 10 })).rejects.toThrow();
      await expectCode(store.head(`${ns}atomic/new`), 'not_found');

      await store.put(`${ns}atomic/old`, Buffer.from('old'));
      const controller = new AbortController();
      const aborted = (async function* () {
        yield randomBytes(1024 * 1024);
        controller.abort();
        yield randomBytes(1024 * 1024);
      })();
      await expect(store.put(`${ns}atomic/old`, aborted, { signal: controller.signal })).rejects.toThrow();
      expect((await getBytes(store, `${ns}atomic/old`)).toString()).toBe('old');
      expect(await listKeys(store, `${ns}atomic/`)).toEqual([`${ns}atomic/old`]);
    });

    it('lists by plain prefix in byte order, including keys that extend the prefix', async (ctx) => {
      const t = use(ctx);
      const { store } = t;
      const keys = ['p/ab', 'p/a/x', 'p/a-b', 'p/a.x', 'p/b', 'p/a/y/z', 'q/a'].map((k) => `${ns}list/${k}`);
      for (const k of keys) await store.put(k, Buffer.from(k));
      const listed = async (prefix: string) => {
        const got = await listKeys(store, prefix);
        return t.listOrderUnreliable === undefined ? got : got.sort();
      };
      expect(await listed(`${ns}list/p/a`)).toEqual(['p/a-b', 'p/a.x', 'p/a/x', 'p/a/y/z', 'p/ab'].map((k) => `${ns}list/${k}`));
      expect(await listed(`${ns}list/p/a/`)).toEqual(['p/a/x', 'p/a/y/z'].map((k) => `${ns}list/${k}`));
      expect(await listed(`${ns}list/`)).toEqual([...keys].sort());
      if (t.listOrderUnreliable !== undefined) await ctx.annotate(`order not checked: ${t.listOrderUnreliable}`);
      expect(await listKeys(store, `${ns}list/none`)).toEqual([]);
      const entries = [];
      for await (const e of store.list(`${ns}list/p/b`)) entries.push(e);
      expect(entries).toHaveLength(1);
      expect(entries[0]).toMatchObject({ key: `${ns}list/p/b`, size: `${ns}list/p/b`.length });
      expect(entries[0]?.lastModified).toBeInstanceOf(Date);
    });

    it(`lists ${ManyKeys} keys across pages in order`, async (ctx) => {
      const { store } = use(ctx);
      const keys = Array.from({ length: ManyKeys }, (_, i) => `${ns}many/${i.toString(16).padStart(16, '0')}.hrl`);
      for (let i = 0; i < keys.length; i += 32) await Promise.all(keys.slice(i, i + 32).map((k) => store.put(k, Buffer.from('.'))));
      expect(await listKeys(store, `${ns}many/`)).toEqual(keys);
    });

    it('refuses invalid keys and prefixes before touching the backend', async (ctx) => {
      const { store } = use(ctx);
      const bad = ['', '/abs', 'a/../b', '..', 'a/./b', 'a\\b', 'a//b', 'a/', 'a\0b', '.hidden', 'a/.tmp-x', 'sp ace', 'x'.repeat(1100)];
      for (const key of bad) {
        await expectCode(store.put(key, Buffer.from('x')), 'invalid_argument');
        await expectCode(store.get(key), 'invalid_argument');
        await expectCode(store.head(key), 'invalid_argument');
        await expectCode(store.delete(key), 'invalid_argument');
        await expectCode(store.grant(key, { operation: 'get', expiresIn: 60 }), 'invalid_argument');
      }
      await expectCode(listKeys(store, '/abs'), 'invalid_argument');
      await expectCode(listKeys(store, '../'), 'invalid_argument');
    });

    it('grants a put URL that a plain HTTP client uses, then a get URL', async (ctx) => {
      const { store } = use(ctx);
      const key = `${ns}grant/put.bin`;
      const data = randomBytes(300_000);
      const put = await store.grant(key, { operation: 'put', expiresIn: 300 });
      expect(put.method).toBe('PUT');
      expect(put.expiresAt.getTime()).toBeGreaterThan(Date.now());
      const res = await fetch(put.url, { method: 'PUT', headers: put.headers, body: data });
      expect(res.status, await res.text()).toBeLessThan(300);
      expect(sha256(await getBytes(store, key))).toBe(sha256(data));

      const get = await store.grant(key, { operation: 'get', expiresIn: 300 });
      expect(get.method).toBe('GET');
      const got = await fetch(get.url, { headers: get.headers });
      expect(got.status).toBe(200);
      expect(sha256(Buffer.from(await got.arrayBuffer()))).toBe(sha256(data));
    });

    it('refuses an expired grant', async (ctx) => {
      const { store } = use(ctx);
      const key = `${ns}grant/expired.bin`;
      await store.put(key, Buffer.from('old'));
      const issuedAt = new Date(Date.now() - 3600_000);
      const put = await store.grant(key, { operation: 'put', expiresIn: 60, issuedAt });
      expect(put.expiresAt.getTime()).toBeLessThan(Date.now());
      const res = await fetch(put.url, { method: 'PUT', headers: put.headers, body: Buffer.from('new') });
      expect(res.status).toBe(403);
      const get = await store.grant(key, { operation: 'get', expiresIn: 60, issuedAt });
      expect((await fetch(get.url, { headers: get.headers })).status).toBe(403);
      expect((await getBytes(store, key)).toString()).toBe('old');
    });

    it('binds a grant to its key and operation', async (ctx) => {
      const t = use(ctx);
      const { store } = t;
      if (t.grantsUnverified !== undefined) ctx.skip(t.grantsUnverified);
      const put = await store.grant(`${ns}grant/one.bin`, { operation: 'put', expiresIn: 300 });
      const get = await store.grant(`${ns}grant/one.bin`, { operation: 'get', expiresIn: 300 });
      // A get grant does not allow a put.
      const asPut = await fetch(get.url, { method: 'PUT', headers: { ...put.headers, ...get.headers }, body: Buffer.from('x') });
      expect(asPut.status).toBeGreaterThanOrEqual(400);
      await expectCode(store.head(`${ns}grant/one.bin`), 'not_found');
      const other = put.url.replace('one.bin', 'two.bin');
      expect(other).not.toBe(put.url);
      const res = await fetch(other, { method: 'PUT', headers: put.headers, body: Buffer.from('x') });
      expect(res.status).toBe(403);
      await expectCode(store.head(`${ns}grant/two.bin`), 'not_found');
    });
  });
}
