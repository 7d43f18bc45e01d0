/**
 * API keys and the audit log against a real service on PostgreSQL: who may make which keys, what a
 * key of another tenant sees, expiry and revocation, the last-used time, and audit rows written with
 * the change, filtered, paged and never changed.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signApiToken } from '../../service/trust/tokens.js';
import type { TestEnv } from './helpers.js';
import { operator, PgUrl, testEnv, testService } from './helpers.js';

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let acmeAdmin: string;
let globexAdmin: string;

interface Key { id: string; key: string; role: string; tenant: string | null; lastUsedAt: string | null; revokedAt: string | null }
interface Audit { id: number; actor: string; actorKey: string | null; actorRole: string; tenant: string | null; action: string; target: string; source: string | null; requestId: string | null; result: string }

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  for (const name of ['acme', 'globex']) expect((await operator(svc, 'POST', '/v1/tenants', { name })).status).toBe(201);
  acmeAdmin = await signApiToken(svc.ctx.signer, { role: 'tenant-admin', tenant: 'acme', sub: 'alice@acme' }, 600);
  globexAdmin = await signApiToken(svc.ctx.signer, { role: 'tenant-admin', tenant: 'globex', sub: 'gina@globex' }, 600);
});
afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

const create = (body: unknown, token?: string) => operator<Key & { code?: string; detail?: string }>(svc, 'POST', '/v1/api-keys', body, token);

describe('API keys', () => {
  it('are made by hoster-admin for any role and by a tenant-admin for its own tenant\'s tenant roles only', async () => {
    const hoster = await create({ name: 'panel', role: 'hoster-operator' });
    expect(hoster.status).toBe(201);
    expect(hoster.body).toMatchObject({ role: 'hoster-operator', tenant: null, key: expect.stringMatching(/^lbk_[0-9a-f]{16}_/) });
    // The key works as a bearer and carries its role: hoster-operator reads all but manages no keys.
    expect((await operator(svc, 'GET', '/v1/tenants', undefined, hoster.body.key)).status).toBe(200);
    expect((await operator(svc, 'GET', '/v1/api-keys', undefined, hoster.body.key)).status).toBe(403);

    const own = await create({ name: 'acme ops', role: 'tenant-operator' }, acmeAdmin);
    expect(own.status).toBe(201);
    expect(own.body.tenant).toBe('acme');
    expect((await create({ name: 'up', role: 'hoster-admin' }, acmeAdmin)).status).toBe(403);
    expect((await create({ name: 'theirs', role: 'tenant-viewer', tenant: 'globex' }, acmeAdmin)).status).toBe(404);
    expect((await create({ name: 'by operator', role: 'tenant-viewer' }, own.body.key)).status).toBe(403);
    expect((await create({ name: 'x', role: 'tenant-viewer' })).body).toMatchObject({ status: 400, detail: expect.stringMatching(/tenant is missing/) });
    expect((await create({ name: 'x', role: 'hoster-operator', tenant: 'acme' })).status).toBe(400);
    expect((await create({ name: 'x', role: 'tenant-viewer', tenant: 'acme', expiresIn: '5000d' })).status).toBe(400);
  });

  it('are listed and shown without secrets, each tenant its own; another tenant\'s key is 404', async () => {
    const k = (await create({ name: 'acme viewer', role: 'tenant-viewer', tenant: 'acme' })).body;
    const mine = await operator<{ keys: Key[] }>(svc, 'GET', '/v1/api-keys', undefined, acmeAdmin);
    expect(mine.body.keys.every((x) => x.tenant === 'acme' && !('key' in x))).toBe(true);
    expect(mine.body.keys.map((x) => x.id)).toContain(k.id);
    expect((await operator(svc, 'GET', '/v1/api-keys?tenant=acme', undefined, globexAdmin)).status).toBe(404);
    expect((await operator(svc, 'GET', `/v1/api-keys/${k.id}`, undefined, globexAdmin)).status).toBe(404);
    expect((await operator(svc, 'DELETE', `/v1/api-keys/${k.id}`, undefined, globexAdmin)).status).toBe(404);
    expect((await operator(svc, 'GET', `/v1/api-keys/${k.id}`, undefined, acmeAdmin)).status).toBe(200);
    // A hoster key is as unknown to a tenant-admin as a key that does not exist.
    const all = await operator<{ keys: Key[] }>(svc, 'GET', '/v1/api-keys');
    const hosterKey = all.body.keys.find((x) => x.tenant === null)!;
    expect((await operator(svc, 'GET', `/v1/api-keys/${hosterKey.id}`, undefined, acmeAdmin)).status).toBe(404);
    expect((await operator(svc, 'GET', '/v1/api-keys/0000000000000000', undefined, acmeAdmin)).status).toBe(404);
  });

  it('are refused when revoked, expired, altered or unknown, in one 401 without the secret', async () => {
    const k = (await create({ name: 'short', role: 'tenant-viewer', tenant: 'acme' })).body;
    const use = (key: string) => operator<{ reason?: string; detail?: string }>(svc, 'GET', '/v1/tenants/acme/failovers', undefined, key);
    expect((await use(k.key)).status).toBe(200);
    const altered = await use(`${k.key.slice(0, -1)}${k.key.endsWith('A') ? 'B' : 'A'}`);
    expect(altered.status).toBe(401);
    expect(altered.body.reason).toBe('key_invalid');
    expect(altered.body.detail).not.toContain(k.key.slice(21));
    expect((await use('lbk_0123456789abcdef_' + 'x'.repeat(43))).body.reason).toBe('key_invalid');
    // Expired: moved into the past in the catalog (no sleeping).
    const client = new pg.Client({ connectionString: PgUrl });
    await client.connect();
    try {
      await client.query(`UPDATE ${env.schema}.api_keys SET expires_at = now() - interval '1 second' WHERE id = $1`, [k.id]);
      expect((await use(k.key)).body.reason).toBe('key_expired');
      await client.query(`UPDATE ${env.schema}.api_keys SET expires_at = NULL WHERE id = $1`, [k.id]);
      expect((await use(k.key)).status).toBe(200);
      expect((await operator(svc, 'DELETE', `/v1/api-keys/${k.id}`, undefined, acmeAdmin)).status).toBe(200);
      expect((await use(k.key)).body.reason).toBe('key_revoked');
    } finally {
      await client.end();
    }
  });

  it('record their last use at most once a minute', async () => {
    const k = (await create({ name: 'busy', role: 'tenant-viewer', tenant: 'acme' })).body;
    expect(k.lastUsedAt).toBeNull();
    for (let i = 0; i < 5; i++) await operator(svc, 'GET', '/v1/tenants/acme/failovers', undefined, k.key);
    const first = (await operator<Key>(svc, 'GET', `/v1/api-keys/${k.id}`)).body.lastUsedAt;
    expect(first).not.toBeNull();
    await operator(svc, 'GET', '/v1/tenants/acme/failovers', undefined, k.key);
    expect((await operator<Key>(svc, 'GET', `/v1/api-keys/${k.id}`)).body.lastUsedAt).toBe(first);
  });
});

describe('audit', () => {
  it('has a row per key creation and revocation, with actor, role, tenant, source, request id and result', async () => {
    const res = await fetch(`${svc.apiUrl}/v1/api-keys`, {
      method: 'POST', headers: { authorization: `Bearer ${acmeAdmin}`, 'content-type': 'application/json', 'x-request-id': 'audit-req-1' },
      body: JSON.stringify({ name: 'audited', role: 'tenant-viewer' }),
    });
    const k = (await res.json()) as Key;
    await operator(svc, 'DELETE', `/v1/api-keys/${k.id}`, undefined, acmeAdmin);
    await create({ name: 'refused', role: 'tenant-viewer', tenant: 'nosuch' });
    const { entries } = (await operator<{ entries: Audit[] }>(svc, 'GET', '/v1/audit?actor=alice@acme')).body;
    expect(entries.slice(0, 2)).toMatchObject([
      { action: 'api-key.revoke', target: `api-key ${k.id}`, actorRole: 'tenant-admin', tenant: 'acme', result: 'ok' },
      { action: 'api-key.create', actor: 'alice@acme', actorKey: null, tenant: 'acme', requestId: 'audit-req-1', source: expect.stringMatching(/127\.0\.0\.1|::1/), result: 'ok' },
    ]);
    const refused = (await operator<{ entries: Audit[] }>(svc, 'GET', '/v1/audit?tenant=nosuch')).body.entries;
    expect(refused).toMatchObject([{ action: 'api-key.create', result: 'not_found' }]);
  });

  it('has a row per tenant creation, in the transaction of the tenant, and one for a refused duplicate', async () => {
    expect((await operator(svc, 'POST', '/v1/tenants', { name: 'initech' })).status).toBe(201);
    expect((await operator(svc, 'POST', '/v1/tenants', { name: 'initech' })).status).toBe(409);
    const { entries } = (await operator<{ entries: Audit[] }>(svc, 'GET', '/v1/audit?tenant=initech')).body;
    expect(entries.map((e) => [e.action, e.target, e.actor, e.actorRole, e.result])).toEqual([
      ['tenant.create', 'tenant initech', 'admin', 'hoster-admin', 'already_exists'],
      ['tenant.create', 'tenant initech', 'admin', 'hoster-admin', 'ok'],
    ]);
  });

  it('shows tenant roles only their own tenant and pages by cursor', async () => {
    const mine = (await operator<{ entries: Audit[] }>(svc, 'GET', '/v1/audit', undefined, acmeAdmin)).body.entries;
    expect(mine.length).toBeGreaterThan(0);
    expect(mine.every((e) => e.tenant === 'acme')).toBe(true);
    expect((await operator(svc, 'GET', '/v1/audit?tenant=globex', undefined, acmeAdmin)).status).toBe(404);
    const seen: number[] = [];
    let cursor: string | null = '';
    while (cursor !== null) {
      const page: { entries: Audit[]; nextCursor: string | null } = (await operator<{ entries: Audit[]; nextCursor: string | null }>(svc, 'GET', `/v1/audit?limit=2${cursor ? `&cursor=${cursor}` : ''}`)).body;
      expect(page.entries.length).toBeLessThanOrEqual(2);
      seen.push(...page.entries.map((e) => e.id));
      cursor = page.nextCursor;
    }
    const all = (await operator<{ entries: Audit[] }>(svc, 'GET', '/v1/audit?limit=500')).body.entries.map((e) => e.id);
    expect(seen).toEqual(all);
    expect(new Set(seen).size).toBe(seen.length);
    const future = new Date(Date.now() + 3_600_000).toISOString();
    expect((await operator<{ entries: Audit[] }>(svc, 'GET', `/v1/audit?from=${encodeURIComponent(future)}`)).body.entries).toEqual([]);
  });

  it('cannot be changed: no route, and the table refuses UPDATE and DELETE', async () => {
    expect((await operator(svc, 'DELETE', '/v1/audit')).status).toBe(404);
    expect((await operator(svc, 'PUT', '/v1/audit', {})).status).toBe(404);
    const client = new pg.Client({ connectionString: PgUrl });
    await client.connect();
    try {
      await expect(client.query(`UPDATE ${env.schema}.audit_log SET result = 'ok'`)).rejects.toThrow(/cannot be changed/);
      await expect(client.query(`DELETE FROM ${env.schema}.audit_log`)).rejects.toThrow(/cannot be changed/);
    } finally {
      await client.end();
    }
  });
});
