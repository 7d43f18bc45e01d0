/**
 * Lists and conditional requests against the real service on PostgreSQL (docs/api.md, Lists; ETags
 * and conditional requests): a walk by cursor sees every item once while items are added, a stale
 * If-Match loses to a concurrent change without losing it, and another tenant's key sees nothing of a
 * tenant's lists through filters or cursors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestEnv } from '../service/helpers.js';
import { operator, testEnv, testService } from '../service/helpers.js';

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
const keys = new Map<string, string>();

interface Answer<T> { status: number; headers: Headers; body: T }

async function call<T = Record<string, unknown>>(key: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer<T>> {
  const res = await fetch(`${svc.apiUrl}${path}`, {
    method, headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: (text ? JSON.parse(text) : undefined) as T };
}

/** Every page of a list from its start, each page's items in order, by following nextCursor. */
async function walk<T>(key: string, path: string, field: string, between?: (page: number) => Promise<void>): Promise<T[][]> {
  const pages: T[][] = [];
  let cursor: string | null = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const r: Answer<Record<string, unknown>> = await call(key, 'GET', `${path}${cursor === null ? '' : `${sep}cursor=${cursor}`}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    pages.push(r.body[field] as T[]);
    cursor = r.body.nextCursor as string | null;
    await between?.(pages.length);
  } while (cursor !== null && pages.length < 100);
  return pages;
}

const subscribe = async (key: string, tenant: string, description: string) => {
  const r = await call<{ id: string; etag: string }>(key, 'POST', `/v1/tenants/${tenant}/webhooks`, { url: 'https://hooks.example.com/lifeboat', description });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body;
};

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  for (const name of ['acme', 'globex']) expect((await operator(svc, 'POST', '/v1/tenants', { name })).status).toBe(201);
  const made = await operator<{ key: string }>(svc, 'POST', '/v1/api-keys', { name: 'lists hoster', role: 'hoster-admin' });
  keys.set('hoster', made.body.key);
  for (const tenant of ['acme', 'globex']) {
    const r = await operator<{ key: string }>(svc, 'POST', '/v1/api-keys', { name: `lists ${tenant}`, role: 'tenant-admin', tenant });
    keys.set(tenant, r.body.key);
  }
});
afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

describe('lists', () => {
  it('walks a list longer than a page by cursor: every item once, while items are added', async () => {
    const acme = keys.get('acme')!;
    const before: string[] = [];
    for (let i = 0; i < 7; i++) before.push((await subscribe(acme, 'acme', `walk ${i}`)).id);
    const added: string[] = [];
    const pages = await walk<{ id: string; etag: string }>(acme, '/v1/tenants/acme/webhooks?limit=3', 'webhooks', async (page) => {
      if (page <= 2) added.push((await subscribe(acme, 'acme', `added during page ${page}`)).id);
    });
    const seen = pages.flat().map((s) => s.id);
    expect(pages.slice(0, -1).every((p) => p.length === 3)).toBe(true);
    expect(new Set(seen).size).toBe(seen.length);
    // Oldest first: what existed is seen once, in order, and what was added during the walk comes after it.
    expect(seen).toEqual([...before, ...added]);
    // Each item carries the etag its own GET answers with.
    const one = await call<{ etag: string }>(acme, 'GET', `/v1/tenants/acme/webhooks/${before[0]}`);
    expect(one.body.etag).toBe(pages[0]![0]!.etag);
    expect(one.headers.get('etag')).toBe(one.body.etag);
  });

  it('walks a newest-first list (events) by cursor: every event once; newer ones do not shift the pages', async () => {
    const acme = keys.get('acme')!;
    const sub = await subscribe(acme, 'acme', 'events walk');
    for (let i = 0; i < 5; i++) expect((await call(acme, 'POST', `/v1/tenants/acme/webhooks/${sub.id}/test`)).status).toBe(202);
    const all = (await call<{ events: { id: string }[] }>(acme, 'GET', '/v1/tenants/acme/events?type=webhook.test')).body.events.map((e) => e.id);
    expect(all.length).toBe(5);
    const pages = await walk<{ id: string }>(acme, '/v1/tenants/acme/events?type=webhook.test&limit=2', 'events', async () => {
      expect((await call(acme, 'POST', `/v1/tenants/acme/webhooks/${sub.id}/test`)).status).toBe(202);
    });
    expect(pages.flat().map((e) => e.id)).toEqual(all);
  });

  it('refuses a cursor of another list, a made-up cursor and bad filters with 400 problems', async () => {
    const acme = keys.get('acme')!;
    const first = await call<{ nextCursor: string }>(acme, 'GET', '/v1/tenants/acme/webhooks?limit=1');
    expect(first.body.nextCursor).toEqual(expect.any(String));
    for (const path of [
      `/v1/tenants/acme/webhooks?limit=1&enabled=true&cursor=${first.body.nextCursor}`,
      `/v1/tenants/acme/events?cursor=${first.body.nextCursor}`,
      '/v1/tenants/acme/webhooks?cursor=bm90LWEtY3Vyc29y',
      '/v1/tenants/acme/webhooks?cursor=%7B%7D',
      '/v1/tenants/acme/webhooks?limit=0',
      '/v1/tenants/acme/webhooks?limit=501',
      '/v1/tenants/acme/events?from=yesterday',
      '/v1/tenants/acme/webhooks?colour=blue',
    ]) {
      const r = await call<{ status: number; detail: string }>(acme, 'GET', path);
      expect([r.status, r.headers.get('content-type')], `${path}: ${JSON.stringify(r.body)}`).toEqual([400, 'application/problem+json']);
      expect(r.body.detail).not.toMatch(/\n|at .*\.ts/);
    }
  });

  it('shows another tenant nothing of a tenant\'s lists through filters or cursors', async () => {
    const [acme, globex, hoster] = [keys.get('acme')!, keys.get('globex')!, keys.get('hoster')!];
    await subscribe(globex, 'globex', 'globex own');
    const acmePage = await call<{ nextCursor: string }>(acme, 'GET', '/v1/tenants/acme/webhooks?limit=1');
    const acmeEvents = await call<{ nextCursor: string }>(acme, 'GET', '/v1/tenants/acme/events?limit=1');
    // Its own list with the other tenant's cursor: refused, not a page of the other's items.
    expect((await call(globex, 'GET', `/v1/tenants/globex/webhooks?limit=1&cursor=${acmePage.body.nextCursor}`)).status).toBe(400);
    expect((await call(globex, 'GET', `/v1/tenants/globex/events?limit=1&cursor=${acmeEvents.body.nextCursor}`)).status).toBe(400);
    // The other tenant's list, with or without its cursor: as for a tenant that does not exist.
    for (const path of ['/v1/tenants/acme/webhooks', `/v1/tenants/acme/webhooks?limit=1&cursor=${acmePage.body.nextCursor}`, '/v1/tenants/acme/events?type=webhook.test', '/v1/audit?tenant=acme', '/v1/api-keys?tenant=acme']) {
      const r = await call<{ detail: string }>(globex, 'GET', path);
      expect(r.status, path).toBe(404);
    }
    // Hoster-wide lists and their tenant filters are the hoster's.
    for (const path of ['/v1/webhooks?tenant=acme', '/v1/events?tenant=acme', '/v1/failovers?tenant=acme', '/v1/vms?tenant=acme']) expect((await call(globex, 'GET', path)).status, path).toBe(403);
    // Its own lists hold only its own items, page after page.
    const own = (await walk<{ tenant: string }>(globex, '/v1/tenants/globex/webhooks?limit=1', 'webhooks')).flat();
    expect(own.length).toBeGreaterThan(0);
    expect(own.every((s) => s.tenant === 'globex')).toBe(true);
    const audit = (await walk<{ tenant: string | null }>(globex, '/v1/audit?limit=2', 'entries')).flat();
    expect(audit.length).toBeGreaterThan(0);
    expect(audit.every((e) => e.tenant === 'globex')).toBe(true);
    // The hoster's filter by tenant gives that tenant's only.
    const filtered = (await walk<{ tenant: string | null }>(hoster, '/v1/webhooks?tenant=globex&limit=1', 'webhooks')).flat();
    expect(filtered.map((s) => s.tenant)).toEqual(['globex']);
  });
});

describe('etags', () => {
  it('answers If-None-Match with 304 while the object is unchanged, and 200 with the new etag once it changed', async () => {
    const acme = keys.get('acme')!;
    const sub = await subscribe(acme, 'acme', 'cache');
    const path = `/v1/tenants/acme/webhooks/${sub.id}`;
    const same = await call(acme, 'GET', path, undefined, { 'if-none-match': sub.etag });
    expect([same.status, same.headers.get('etag'), same.body]).toEqual([304, sub.etag, undefined]);
    const changed = await call<{ etag: string }>(acme, 'PATCH', path, { description: 'cache, changed' });
    expect(changed.body.etag).not.toBe(sub.etag);
    const fresh = await call<{ etag: string; description: string }>(acme, 'GET', path, undefined, { 'if-none-match': sub.etag });
    expect([fresh.status, fresh.body.description, fresh.body.etag]).toEqual([200, 'cache, changed', changed.body.etag]);
  });

  it('lets one of two concurrent changes with the same If-Match through and refuses the other with 412, losing nothing', async () => {
    const acme = keys.get('acme')!;
    const sub = await subscribe(acme, 'acme', 'race');
    const path = `/v1/tenants/acme/webhooks/${sub.id}`;
    const [a, b] = await Promise.all(['race: first writer', 'race: second writer'].map((description) => call<{ etag?: string; code?: string; description?: string }>(acme, 'PATCH', path, { description }, { 'if-match': sub.etag })));
    const statuses = [a!.status, b!.status].sort();
    expect(statuses).toEqual([200, 412]);
    const [won, lost] = a!.status === 200 ? [a!, b!] : [b!, a!];
    expect([lost.headers.get('content-type'), lost.body.code]).toEqual(['application/problem+json', 'precondition_failed']);
    // The winner's change is what the object holds; the loser is told the etag it has now and redoes its change on it.
    const now = await call<{ description: string; etag: string }>(acme, 'GET', path);
    expect([now.body.description, now.body.etag]).toEqual([won.body.description, won.body.etag]);
    expect(lost.headers.get('etag')).toBe(now.body.etag);
    const redo = await call<{ description: string }>(acme, 'PATCH', path, { description: `${won.body.description} + the other` }, { 'if-match': now.body.etag });
    expect([redo.status, redo.body.description]).toEqual([200, `${won.body.description} + the other`]);
    // A stale etag on DELETE changes nothing either; the current one (or *) deletes.
    expect((await call(acme, 'DELETE', path, undefined, { 'if-match': sub.etag })).status).toBe(412);
    expect((await call(acme, 'GET', path)).status).toBe(200);
    expect((await call(acme, 'DELETE', path, undefined, { 'if-match': '*' })).status).toBe(200);
    expect((await call(acme, 'DELETE', path, undefined, { 'if-match': '*' })).status).toBe(404);
  });

  it('refuses a stale If-Match on a tenant\'s settings and writes the refusal in the audit log', async () => {
    const hoster = keys.get('hoster')!;
    const list = await call<{ tenants: { name: string; etag: string }[] }>(hoster, 'GET', '/v1/tenants');
    const globex = list.body.tenants.find((t) => t.name === 'globex')!;
    const first = await call<{ etag: string; testFailoverMaxHours: number }>(hoster, 'PATCH', '/v1/tenants/globex', { testFailoverMaxHours: 3 }, { 'if-match': globex.etag });
    expect([first.status, first.body.testFailoverMaxHours]).toEqual([200, 3]);
    const stale = await call(hoster, 'PATCH', '/v1/tenants/globex', { testFailoverMaxHours: 5 }, { 'if-match': globex.etag });
    expect(stale.status).toBe(412);
    const after = (await call<{ tenants: { name: string; etag: string; testFailoverMaxHours: number }[] }>(hoster, 'GET', '/v1/tenants')).body.tenants.find((t) => t.name === 'globex')!;
    expect([after.testFailoverMaxHours, after.etag]).toEqual([3, first.body.etag]);
    const audit = await call<{ entries: { action: string; result: string }[] }>(hoster, 'GET', '/v1/audit?tenant=globex&limit=1');
    expect(audit.body.entries[0]).toMatchObject({ action: 'tenants.update', result: 'precondition_failed' });
  });
});
