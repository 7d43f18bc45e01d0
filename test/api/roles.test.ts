/**
 * Walks the table of routes and roles in docs/api.md against the real service on PostgreSQL: the
 * table lists exactly the routes the app serves; every route is called with an API key of every
 * role, and every {tenant} route with another tenant's keys; each answer is the one the table says.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiApp } from '../../service/api/app.js';
import type { Role } from '../../service/trust/roles.js';
import { Roles } from '../../service/trust/roles.js';
import type { TestEnv } from '../service/helpers.js';
import { operator, testEnv, testService } from '../service/helpers.js';
import { concrete } from './probes.js';
import type { Row } from './routes-table.js';
import { tableRows } from './routes-table.js';

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let rows: Row[];
const keys = new Map<string, string>();
const tenantRoles: Role[] = ['tenant-admin', 'tenant-operator', 'tenant-viewer'];

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  rows = await tableRows();
  for (const name of ['acme', 'globex']) expect((await operator(svc, 'POST', '/v1/tenants', { name })).status).toBe(201);
  for (const role of Roles) {
    for (const tenant of role.startsWith('tenant-') ? ['acme', 'globex'] : [undefined]) {
      const r = await operator<{ key: string }>(svc, 'POST', '/v1/api-keys', { name: `${role} probe`, role, ...(tenant ? { tenant } : {}) });
      expect(r.status).toBe(201);
      keys.set(tenant ? `${role}@${tenant}` : role, r.body.key);
    }
  }
});
afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

async function call(row: Row, key: string) {
  const body = row.method === 'GET' || row.method === 'DELETE' ? undefined : {};
  return operator<{ detail?: string; reason?: string }>(svc, row.method, concrete(row.path), body, key);
}

describe('docs/api.md routes and roles', () => {
  it('lists exactly the routes the app serves', () => {
    const app = apiApp(svc.ctx, () => true);
    const served = new Set(app.routes.filter((r) => r.method !== 'ALL' && r.path.startsWith('/v1/') && r.path !== '/v1/openapi.json' && !r.path.startsWith('/v1/failover-callbacks/'))
      .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`));
    const listed = rows.map((r) => `${r.method} ${r.path}`);
    expect(new Set(listed).size, 'a route listed twice').toBe(listed.length);
    expect([...served].filter((r) => !listed.includes(r)), 'served but not in docs/api.md').toEqual([]);
    expect(listed.filter((r) => !served.has(r)), 'in docs/api.md but not served').toEqual([]);
  });

  it('answers every role on every route as the table says', { timeout: 5 * 60_000 }, async () => {
    const wrong: string[] = [];
    for (const row of rows) {
      for (const role of Roles) {
        const r = await call(row, keys.get(role.startsWith('tenant-') ? `${role}@acme` : role)!);
        const allowed = row.roles.includes(role);
        const refusedByAccess = r.status === 401 || r.status === 403 || (r.status === 404 && r.body?.detail === 'no tenant acme');
        if (allowed && refusedByAccess) wrong.push(`${row.method} ${row.path} ${role}: ${r.status} ${r.body?.detail ?? ''} (listed as allowed)`);
        if (!allowed && !(r.status === 403 && r.body?.reason === 'role')) wrong.push(`${row.method} ${row.path} ${role}: ${r.status} ${r.body?.detail ?? ''} (not listed: want 403)`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('answers another tenant\'s keys on every {tenant} route as for a tenant that does not exist', async () => {
    const wrong: string[] = [];
    for (const row of rows.filter((r) => r.path.includes('{tenant}'))) {
      const tenantRoute = row.roles.some((r) => tenantRoles.includes(r));
      for (const role of tenantRoles) {
        const r = await call(row, keys.get(`${role}@globex`)!);
        const ok = tenantRoute ? r.status === 404 && r.body?.detail === 'no tenant acme' : r.status === 403;
        if (!ok) wrong.push(`${row.method} ${row.path} ${role}@globex: ${r.status} ${r.body?.detail ?? ''} (want ${tenantRoute ? 404 : 403})`);
      }
    }
    expect(wrong).toEqual([]);
  });
});
