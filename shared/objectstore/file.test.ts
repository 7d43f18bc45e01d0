import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { describe, expect, it } from 'vitest';
import { execFileP, scratchDir } from '../../test/helpers.js';
import { objectStoreConformance } from './conformance.js';
import { fileGrantHandler } from './file-grant.js';
import { FileStore } from './file.js';
import { recycleBodyChunk } from './index.js';
import { Readable } from 'node:stream';

objectStoreConformance('file', async () => {
  const dir = await scratchDir('lifeboat-objectstore-');
  const signingKey = randomBytes(32);
  // The grant route a service would expose, served here so the suite can fetch grant URLs.
  let handler: (req: Request) => Promise<Response> = async () => new Response(null, { status: 503 });
  const server = serve({ fetch: (req) => handler(req), hostname: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  const store = new FileStore(dir.path, { grant: { grantBaseUrl: `http://127.0.0.1:${port}/v1/objects`, signingKey } });
  handler = fileGrantHandler(store, signingKey);
  return {
    store,
    teardown: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await dir.remove();
    },
  };
}, { mustRun: true });

describe('file store specifics', () => {
  it('hides temporary files, refuses keys that clash with directories, and maps keys under the root only', async () => {
    const dir = await scratchDir('lifeboat-objectstore-');
    try {
      const store = new FileStore(dir.path);
      await store.put('a/b', Buffer.from('x'));
      // A crash mid-put leaves a temporary file behind; it is never listed or readable as a key.
      await writeFile(join(dir.path, 'a', '.tmp-crashed'), 'partial');
      const keys = [];
      for await (const e of store.list('')) keys.push(e.key);
      expect(keys).toEqual(['a/b']);
      await expect(store.put('a', Buffer.from('y'))).rejects.toMatchObject({ code: 'conflict' });
      await expect(store.put('a/b/c', Buffer.from('y'))).rejects.toMatchObject({ code: 'conflict' });
      await expect(store.get('a')).rejects.toMatchObject({ code: 'not_found' });
      await expect(store.head('a/b/c')).rejects.toMatchObject({ code: 'not_found' });
      await expect(store.get('a/b/c')).rejects.toMatchObject({ code: 'not_found' });
      await store.delete('a/b/c');
      expect(await readdir(join(dir.path, 'a'))).toEqual(expect.arrayContaining(['b', '.tmp-crashed']));
      expect((await readdir(join(dir.path, 'a'))).filter((n) => n.startsWith('.tmp-') && n !== '.tmp-crashed')).toEqual([]);
      await expect(store.grant('a/b', { operation: 'get', expiresIn: 60 })).rejects.toMatchObject({ code: 'unsupported' });
    } finally {
      await dir.remove();
    }
  });
});

describe('file store writes bodies through to the device', () => {
  const MiB = 1 << 20;
  /** The body in pieces of odd sizes, as a network upload arrives. */
  const pieces = (data: Buffer, seed: number): Readable => Readable.from((function* () {
    for (let at = 0, i = seed; at < data.length; i++) {
      const n = Math.min(data.length - at, 1 + ((i * 7919) % 300_000));
      yield data.subarray(at, at + n);
      at += n;
    }
  })());
  /** Bytes of the file in the page cache (util-linux fincore). */
  const cached = async (path: string): Promise<number> => Number((await execFileP('fincore', ['--bytes', '--noheadings', '--output', 'RES', path])).stdout.trim());

  it('stores bodies of every size around the stage and page boundaries intact, many puts at once', async () => {
    const dir = await scratchDir('lifeboat-objectstore-');
    try {
      const store = new FileStore(dir.path);
      const sizes = [0, 1, 4095, 4096, 4097, 65535, 65536, 65537 + 4096, MiB - 1, MiB, MiB + 1, 2 * MiB + 4096, 3 * MiB + 12345];
      const bodies = sizes.map((n) => randomBytes(n));
      // All at once: the staging buffers are shared by every put of the thread.
      await Promise.all(bodies.map((b, i) => store.put(`o/${i}`, pieces(b, i), { contentLength: b.length })));
      for (const [i, b] of bodies.entries()) expect((await readFile(join(dir.path, 'o', String(i)))).equals(b), `size ${sizes[i]}`).toBe(true);
    } finally {
      await dir.remove();
    }
  });

  it('reads whole objects of every size back intact through the device, chunks handed back or kept', async () => {
    const dir = await scratchDir('lifeboat-objectstore-');
    try {
      const store = new FileStore(dir.path);
      const sizes = [1, 4095, MiB - 1, MiB, MiB + 1, 3 * MiB, 5 * MiB + 4097];
      const bodies = sizes.map((n) => randomBytes(n));
      await Promise.all(bodies.map((b, i) => store.put(`r/${i}`, b)));
      // Several at once, some consumers handing chunks back (as the merge does), some keeping them.
      await Promise.all(bodies.map(async (b, i) => {
        const parts: Buffer[] = [];
        for await (const c of await store.get(`r/${i}`)) {
          parts.push(Buffer.from(c as Buffer));
          if (i % 2 === 0) recycleBodyChunk(c as Buffer);
        }
        expect(Buffer.concat(parts).equals(b), `size ${sizes[i]}`).toBe(true);
      }));
      // A consumer that stops early leaves nothing open or broken for the next read.
      const early = await store.get('r/6');
      for await (const c of early) { recycleBodyChunk(c as Buffer); break; }
      const again: Buffer[] = [];
      for await (const c of await store.get('r/6')) again.push(Buffer.from(c as Buffer));
      expect(Buffer.concat(again).equals(bodies[6]!)).toBe(true);
    } finally {
      await dir.remove();
    }
  });

  it('leaves a large body out of the page cache, all but its unaligned tail', async (t) => {
    const dir = await scratchDir('lifeboat-objectstore-');
    try {
      const store = new FileStore(dir.path);
      const body = randomBytes(6 * MiB + 1000);
      await store.put('big', pieces(body, 3), { contentLength: body.length });
      const path = join(dir.path, 'big');
      const resident = await cached(path);
      // A filesystem without O_DIRECT (tmpfs) keeps it all: nothing to check there.
      const probe = await open(join(dir.path, 'probe'), constants.O_CREAT | constants.O_WRONLY | constants.O_DIRECT).catch(() => null);
      await probe?.close();
      if (probe === null) t.skip();
      expect(resident).toBeLessThanOrEqual(4096);
      // Read back through the store, it stays out of the page cache too.
      const parts: Buffer[] = [];
      for await (const c of await store.get('big')) parts.push(Buffer.from(c as Buffer));
      expect(Buffer.concat(parts).equals(body)).toBe(true);
      expect(await cached(path)).toBeLessThanOrEqual(4096);
      expect((await readFile(path)).equals(body)).toBe(true);
    } finally {
      await dir.remove();
    }
  });
});
