/**
 * Walks the mutating routes of docs/api.md's table against the real service on PostgreSQL: every
 * mutation leaves exactly one audit row (in the caller's tenant for tenant roles), and honours
 * Idempotency-Key (a repeat answers the first answer and writes nothing; another request with the key
 * is 422). Then one real change through its whole life: repeats, concurrent repeats, another caller,
 * a key past its 24 hours; and the audit log's read side: tenant roles see only their tenant's rows,
 * no route changes a row.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Role } from '../../service/trust/roles.js';
import type { TestEnv } from '../service/helpers.js';
import { operator, testEnv, testService } from '../service/helpers.js';
import type { Row } from './routes-table.js';
import { concrete } from './probes.js';
import { tableRows } from './routes-table.js';

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let rows: Row[];
const keys = new Map<string, string>();

interface Answer { status: number; body: Record<string, unknown> | undefined; text: string; replayed: boolean; requestId: string }

async function call(method: string, path: string, key: string, options: { body?: unknown; idempotencyKey?: string } = {}): Promise<Answer> {
  const requestId = randomUUID();
  const res = await fetch(`${svc.apiUrl}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${key}`, 'x-request-id': requestId,
      ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(options.idempotencyKey === undefined ? {} : { 'idempotency-key': options.idempotencyKey }),
    },
    ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
  });
  const text = await res.text();
  let body: Record<string, unknown> | undefined;
  try {
    body = text ? JSON.parse(text) as Record<string, unknown> : undefined;
  } catch {
    body = undefined;
  }
  return { status: res.status, body, text, replayed: res.headers.get('idempotent-replayed') === 'true', requestId };
}

interface AuditRow { actor: string; actorKey: string | null; actorTenant: string | null; tenant: string | null; action: string; target: string; result: string }
const auditOf = (requestId: string) => svc.ctx.db.query<AuditRow>(
  'SELECT actor, actor_key AS "actorKey", actor_tenant AS "actorTenant", tenant, action, target, result FROM audit_log WHERE request_id = $1', [requestId]);

const mutating = () => rows.filter((r) => r.method !== 'GET');
/** A caller the table allows: the tenant's admin where it may, else the hoster's admin. */
const allowed = (row: Row): Role => (row.roles.includes('tenant-admin') ? 'tenant-admin' : row.roles.includes('tenant-operator') ? 'tenant-operator' : 'hoster-admin');
const keyOf = (role: Role, tenant = 'acme') => keys.get(role.startsWith('tenant-') ? `${role}@${tenant}` : role)!;
const probeBody = (row: Row) => (row.method === 'DELETE' ? undefined : {});

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  rows = await tableRows();
  for (const name of ['acme', 'globex']) expect((await operator(svc, 'POST', '/v1/tenants', { name })).status).toBe(201);
  for (const [role, tenant] of [['hoster-admin'], ['hoster-operator'], ['tenant-admin', 'acme'], ['tenant-operator', 'acme'], ['tenant-viewer', 'acme'], ['tenant-admin', 'globex']] as [Role, string?][]) {
    const r = await operator<{ key: string }>(svc, 'POST', '/v1/api-keys', { name: `${role} probe`, role, ...(tenant ? { tenant } : {}) });
    expect(r.status).toBe(201);
    keys.set(tenant ? `${role}@${tenant}` : role, r.body.key);
  }
}, 120_000);
afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

describe('audit of every mutation (docs/api.md routes table)', () => {
  it('leaves exactly one audit row per mutating request, naming the caller, the tenant and the result', async () => {
    const wrong: string[] = [];
    expect(mutating().length).toBeGreaterThan(40);
    for (const row of mutating()) {
      const role = allowed(row);
      const a = await call(row.method, concrete(row.path), keyOf(role), { body: probeBody(row) });
      const audit = await auditOf(a.requestId);
      const what = `${row.method} ${row.path} (${role}: ${a.status})`;
      if (audit.length !== 1) {
        wrong.push(`${what}: ${audit.length} audit rows`);
        continue;
      }
      const r = audit[0]!;
      const code = typeof a.body?.code === 'string' ? a.body.code : undefined;
      if (r.result !== (a.status < 400 ? 'ok' : code ?? `status_${a.status}`)) wrong.push(`${what}: result ${r.result}, answer ${code ?? a.status}`);
      if (!/^[a-z-]+\.[a-z-]+$/.test(r.action)) wrong.push(`${what}: action ${r.action}`);
      if (r.actorKey === null || !keyOf(role).startsWith(`lbk_${r.actorKey}_`)) wrong.push(`${what}: actor key ${r.actorKey}`);
      if (row.path.includes('{tenant}') && r.tenant !== 'acme') wrong.push(`${what}: tenant ${r.tenant}`);
    }
    expect(wrong).toEqual([]);
  }, 600_000);

  it('keeps refusals: a role the table does not allow, and another tenant\'s caller (in its own tenant\'s rows)', async () => {
    const viewer = await call('POST', '/v1/tenants/acme/plans', keyOf('tenant-viewer'), { body: {} });
    expect(viewer.status).toBe(403);
    expect(await auditOf(viewer.requestId)).toMatchObject([{ tenant: 'acme', actorTenant: 'acme', action: 'plans.create', result: 'forbidden' }]);
    const other = await call('PUT', '/v1/tenants/acme/network-mappings', keyOf('tenant-admin', 'globex'), { body: {} });
    expect(other.status).toBe(404);
    // globex's probe is globex's to read: acme's rows do not name another tenant's keys.
    expect(await auditOf(other.requestId)).toMatchObject([{ tenant: 'globex', actorTenant: 'globex', result: 'not_found' }]);
  });

  it('shows tenant roles only their tenant\'s rows, and no route changes a row', async () => {
    const mine = await call('GET', '/v1/audit?limit=500', keyOf('tenant-viewer'));
    expect(mine.status).toBe(200);
    const entries = mine.body!.entries as AuditRow[];
    expect(entries.length).toBeGreaterThan(10);
    expect(entries.filter((e) => e.tenant !== 'acme')).toEqual([]);
    expect((await call('GET', '/v1/audit?tenant=globex', keyOf('tenant-viewer'))).status).toBe(404);
    expect(rows.filter((r) => r.path.startsWith('/v1/audit') && r.method !== 'GET')).toEqual([]);
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
      expect((await call(method, '/v1/audit', keyOf('hoster-admin'), { body: {} })).status).toBe(404);
    }
    await expect(svc.ctx.db.query('UPDATE audit_log SET result = $1', ['ok'])).rejects.toThrow(/cannot be changed/);
  });
});

describe('Idempotency-Key on every mutation (docs/api.md routes table)', () => {
  it('answers a repeat with the first answer and no change, and another request with the key 422', async () => {
    const wrong: string[] = [];
    for (const row of mutating()) {
      const role = allowed(row);
      const path = concrete(row.path);
      const idempotencyKey = `walk-${randomUUID()}`;
      const first = await call(row.method, path, keyOf(role), { body: probeBody(row), idempotencyKey });
      const again = await call(row.method, path, keyOf(role), { body: probeBody(row), idempotencyKey });
      const what = `${row.method} ${row.path} (${first.status})`;
      if (first.status >= 500 || first.status === 429) {
        // Not kept: a retry tries again.
        if (again.replayed || (await auditOf(again.requestId)).length !== 1) wrong.push(`${what}: a ${first.status} was kept`);
        continue;
      }
      if (!again.replayed || again.status !== first.status || again.text !== first.text) wrong.push(`${what}: repeat answered ${again.status} replayed=${again.replayed}`);
      if ((await auditOf(again.requestId)).length !== 0) wrong.push(`${what}: the repeat wrote an audit row`);
      const other = await call(row.method, path, keyOf(role), { body: { another: true }, idempotencyKey });
      if (other.status !== 422 || other.body?.reason !== 'idempotency_key_reused') wrong.push(`${what}: another body answered ${other.status}`);
    }
    expect(wrong).toEqual([]);
  }, 600_000);

  it('makes one change for repeats, concurrent ones included; keys are per caller and kept 24 hours', async () => {
    const admin = keyOf('hoster-admin');
    const first = await call('POST', '/v1/tenants', admin, { body: { name: 'initech' }, idempotencyKey: 'create-initech' });
    expect(first.status).toBe(201);
    const again = await call('POST', '/v1/tenants', admin, { body: { name: 'initech' }, idempotencyKey: 'create-initech' });
    expect(again).toMatchObject({ status: 201, text: first.text, replayed: true });
    // Without the key the same request is a second attempt, refused as a duplicate.
    expect((await call('POST', '/v1/tenants', admin, { body: { name: 'initech' } })).status).toBe(409);

    // Concurrent repeats: one change, every caller the same answer.
    const burst = await Promise.all(Array.from({ length: 6 }, () => call('POST', '/v1/tenants', admin, { body: { name: 'hooli' }, idempotencyKey: 'create-hooli' })));
    expect(burst.map((b) => b.status)).toEqual(Array(6).fill(201));
    expect(new Set(burst.map((b) => b.text)).size).toBe(1);
    expect(burst.filter((b) => !b.replayed)).toHaveLength(1);
    const made = await svc.ctx.db.query<{ result: string }>(`SELECT result FROM audit_log WHERE action = 'tenant.create' AND target = 'tenant hooli'`);
    expect(made).toEqual([{ result: 'ok' }]);

    // Another caller's key of the same name is its own.
    const theirs = await call('POST', '/v1/tenants', keyOf('hoster-operator'), { body: { name: 'hooli' }, idempotencyKey: 'create-hooli' });
    expect(theirs).toMatchObject({ status: 409, replayed: false });

    // Past 24 hours the key is forgotten: the request runs again (and is refused as a duplicate now).
    await svc.ctx.db.query(`UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'create-initech'`);
    const late = await call('POST', '/v1/tenants', admin, { body: { name: 'initech' }, idempotencyKey: 'create-initech' });
    expect(late).toMatchObject({ status: 409, replayed: false });

    expect((await call('POST', '/v1/tenants', admin, { body: { name: 'x' }, idempotencyKey: 'bad key with spaces' })).status).toBe(400);
  });
});
