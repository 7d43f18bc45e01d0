import { randomBytes } from 'node:crypto';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { describe, expect, it } from 'vitest';
import { scratchDir } from '../../test/helpers.js';
import { objectStoreConformance } from './conformance.js';
import { fileGrantHandler } from './file-grant.js';
import { FileStore } from './file.js';

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
