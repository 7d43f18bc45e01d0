import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
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
