import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { scratchDir } from '../../test/helpers.js';
import { fileGrantHandler, signFileGrant, verifyFileGrant } from './file-grant.js';
import { FileStore } from './file.js';

const signingKey = randomBytes(32);
const config = { grantBaseUrl: 'https://dr.example/v1/objects', signingKey };
const key = 'tenants/acme/vms/vm1/disks/d0/logs/0000000000000001/0000000000000001.hrl';

describe('file grants', () => {
  it('verify returns the granted key for the granted operation until expiry', () => {
    const now = new Date('2026-11-25T12:00:00Z');
    const g = signFileGrant(config, key, { operation: 'put', expiresIn: 300, issuedAt: now });
    expect(g.url.startsWith('https://dr.example/v1/objects?')).toBe(true);
    expect(g.expiresAt.toISOString()).toBe('2026-11-25T12:05:00.000Z');
    expect(verifyFileGrant(g.url, 'put', { signingKey, now })).toBe(key);
    expect(verifyFileGrant(new URL(g.url).search, 'put', { signingKey, now: new Date('2026-11-25T12:04:59Z') })).toBe(key);
    expect(() => verifyFileGrant(g.url, 'put', { signingKey, now: new Date('2026-11-25T12:05:00Z') })).toThrow(expect.objectContaining({ code: 'forbidden', message: expect.stringContaining('expired') }));
  });

  it('refuses another operation, key, expiry, signing key or a missing field', () => {
    const g = new URL(signFileGrant(config, key, { operation: 'get', expiresIn: 300 }).url);
    const refused = (url: URL | string, op: 'get' | 'put' = 'get', k = signingKey) =>
      expect(() => verifyFileGrant(url, op, { signingKey: k })).toThrow(expect.objectContaining({ code: 'forbidden' }));
    refused(g, 'put');
    const edit = (name: string, value: string | null) => {
      const u = new URL(g);
      if (value === null) u.searchParams.delete(name);
      else u.searchParams.set(name, value);
      return u;
    };
    refused(edit('key', key.replace('vm1', 'vm2')));
    refused(edit('key', 'tenants/other/x'));
    refused(edit('op', 'put'), 'put');
    refused(edit('exp', String(Number(g.searchParams.get('exp')) + 3600)));
    refused(edit('exp', '1e12'));
    refused(edit('sig', 'AAAA'));
    refused(edit('sig', null));
    refused(g, 'get', randomBytes(32));
  });

  it('refuses weak signing keys and out-of-range expiries', () => {
    expect(() => signFileGrant({ ...config, signingKey: randomBytes(16) }, key, { operation: 'get', expiresIn: 60 })).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    for (const expiresIn of [0, -1, 1.5, 8 * 24 * 3600]) {
      expect(() => signFileGrant(config, key, { operation: 'get', expiresIn })).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    }
  });
});

describe('fileGrantHandler', () => {
  it('stores a granted upload, refuses one without a length or over the limit, and serves granted gets', async () => {
    const dir = await scratchDir('lifeboat-grant-');
    try {
      const store = new FileStore(dir.path, { grant: config });
      const handle = fileGrantHandler(store, signingKey, { maxBytes: 8 });
      const put = (await store.grant('g/x', { operation: 'put', expiresIn: 60 })).url;
      expect((await handle(new Request(put, { method: 'PUT', body: 'too long body', headers: { 'content-length': '13' } }))).status).toBe(413);
      expect((await handle(new Request(put, { method: 'PUT', body: 'short' }))).status).toBe(411);
      await expect(store.head('g/x')).rejects.toMatchObject({ code: 'not_found' });
      expect((await handle(new Request(put, { method: 'PUT', body: 'short', headers: { 'content-length': '5' } }))).status).toBe(200);
      const get = (await store.grant('g/x', { operation: 'get', expiresIn: 60 })).url;
      const res = await handle(new Request(get));
      expect(await res.text()).toBe('short');
      expect((await handle(new Request(put))).status).toBe(403);
      expect((await handle(new Request(get, { method: 'DELETE' }))).status).toBe(405);
    } finally {
      await dir.remove();
    }
  });
});
