/**
 * The OpenAPI document against the real service on PostgreSQL: it describes exactly the routes the
 * app serves (a new route without its description fails here, as does a description without a
 * route), and every answer of every route, each object made through the API first so that most
 * answer with success and then every route again with ids that do not exist, matches it: the status
 * is one the document lists for the route, the content type one it lists for that status, and the
 * body valid against its JSON Schema (ajv, draft 2020-12, with formats).
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import type { ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiApp } from '../../service/api/app.js';
import { ReferencePath } from '../../service/api/reference.js';
import { Deliverer } from '../../service/events/deliver.js';
import { createWebhookQueue } from '../../service/events/queue.js';
import { connectRedis } from '../../service/queue.js';
import type { TestEnv } from '../service/helpers.js';
import { enrolledAgent, operator, TestRedisUrl, testEnv, testService } from '../service/helpers.js';
import { SimAgent } from '../service/agent-sim.js';
import { concrete } from './probes.js';

type Doc = {
  paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema?: object }> }> }>>;
  components: { schemas: Record<string, object> };
};

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let doc: Doc;
let admin: string;
const ajv = new Ajv2020({ strict: false, allErrors: false });
addFormats.default(ajv);
const validators = new Map<string, ValidateFunction>();

/** The compiled schema (a document repeats many: compiled once each). */
function validatorFor(schema: object | undefined): ValidateFunction {
  const inlined = inline(schema ?? {}) as object;
  const key = JSON.stringify(inlined);
  let validate = validators.get(key);
  if (!validate) validators.set(key, (validate = ajv.compile(inlined)));
  return validate;
}

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  const res = await fetch(`${svc.apiUrl}/v1/openapi.json`);
  expect(res.status).toBe(200);
  doc = (await res.json()) as Doc;
  admin = (await operator<{ key: string }>(svc, 'POST', '/v1/api-keys', { name: 'openapi walk', role: 'hoster-admin' })).body.key;
});
afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

/** The schema with the document's component references put in place (ajv compiles it alone). */
function inline(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(inline);
  if (schema === null || typeof schema !== 'object') return schema;
  const ref = (schema as { $ref?: string }).$ref;
  if (ref?.startsWith('#/components/schemas/')) return inline(doc.components.schemas[ref.slice('#/components/schemas/'.length)]);
  return Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, inline(v)]));
}

/** The template of the document a concrete path matches (literal segments before parameters). */
function templateOf(method: string, path: string): string | undefined {
  const segs = path.split('/');
  const fits = Object.keys(doc.paths).filter((t) => doc.paths[t]![method] && t.split('/').length === segs.length
    && t.split('/').every((s, i) => (/^\{\w+\}$/.test(s) ? segs[i] !== '' : s === segs[i])));
  const params = (t: string) => (t.match(/\{/g) ?? []).length;
  return fits.sort((a, b) => params(a) - params(b))[0];
}

interface Seen { method: string; template: string; status: number }
const seen: Seen[] = [];
const wrong: string[] = [];

/** Calls a route and checks its answer against the document; returns the parsed body. */
async function call<T = Record<string, unknown>>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: T; etag?: string | null }> {
  const m = method.toLowerCase();
  const template = templateOf(m, path.split('?')[0]!);
  const res = await fetch(`${svc.apiUrl}${path}`, {
    method, headers: { authorization: `Bearer ${admin}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  const type = (res.headers.get('content-type') ?? '').split(';')[0]!.trim();
  const where = `${method} ${path} → ${res.status} ${type}`;
  const parsed = /json$/.test(type) && text ? (JSON.parse(text) as T) : (text as T);
  if (!template) {
    wrong.push(`${where}: no route of the document matches`);
    return { status: res.status, body: parsed };
  }
  seen.push({ method: m, template, status: res.status });
  const answer = doc.paths[template]![m]!.responses[String(res.status)];
  if (!answer) wrong.push(`${where}: status not in the document for ${method} ${template} (${text.slice(0, 200)})`);
  else if (!answer.content) {
    if (text !== '') wrong.push(`${where}: the document says no body, got ${text.slice(0, 100)}`);
  } else if (!answer.content[type]) {
    wrong.push(`${where}: content type not in the document (${Object.keys(answer.content).join(', ')})`);
  } else if (/json$/.test(type)) {
    const validate = validatorFor(answer.content[type].schema);
    if (!validate(parsed)) wrong.push(`${where}: body does not match: ${ajv.errorsText(validate.errors)} in ${text.slice(0, 300)}`);
  }
  // One object's answer carries its etag twice: the header and the body's field, the same string.
  const etag = (parsed as { etag?: unknown } | undefined)?.etag;
  if (res.status < 300 && typeof parsed === 'object' && parsed !== null && (etag !== undefined || res.headers.has('etag')) && etag !== res.headers.get('etag')) {
    wrong.push(`${where}: ETag header ${res.headers.get('etag')} is not the body's etag ${String(etag)}`);
  }
  return { status: res.status, body: parsed, etag: res.headers.get('etag') };
}

/**
 * A call that must succeed (what the walk needs to reach the next route). A GET of one object is
 * asked again with its etag in If-None-Match: a 304 the document lists; a list is walked to its end
 * a page of one item at a time, each page checked too, unless it is one page already.
 */
async function made<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await call<T>(method, path, body);
  expect(r.status, `${method} ${path}: ${JSON.stringify(r.body)}`).toBeLessThan(300);
  if (method === 'GET' && r.etag) expect((await call(method, path, undefined, { 'if-none-match': r.etag })).status, `${path} with If-None-Match`).toBe(304);
  if (method === 'GET' && typeof r.body === 'object' && r.body !== null && 'nextCursor' in r.body && !/[?&](limit|cursor)=/.test(path)) await pages(path);
  return r.body;
}

/** Walks a list one item a page: every item of the whole list once, in the same order. */
async function pages(path: string): Promise<void> {
  const whole = (await call<Record<string, unknown>>('GET', path)).body;
  const field = Object.keys(whole).find((k) => Array.isArray(whole[k]))!;
  const items: unknown[] = [];
  let cursor: string | null = null;
  const sep = path.includes('?') ? '&' : '?';
  do {
    const page: Record<string, unknown> = (await call<Record<string, unknown>>('GET', `${path}${sep}limit=1${cursor ? `&cursor=${cursor}` : ''}`)).body;
    items.push(...(page[field] as unknown[]));
    cursor = page.nextCursor as string | null;
  } while (cursor !== null && items.length <= (whole[field] as unknown[]).length);
  expect(items, `${path} a page of one at a time`).toEqual(whole[field]);
}

const operations = () => Object.entries(doc.paths).flatMap(([path, item]) => Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`));

describe('the OpenAPI document', () => {
  it('describes exactly the routes the app serves', () => {
    const app = apiApp(svc.ctx, () => true);
    const served = new Set(app.routes.filter((r) => r.method !== 'ALL' && !r.path.startsWith('/portal') && !r.path.startsWith(ReferencePath)).map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`));
    const described = operations();
    expect([...served].filter((r) => !described.includes(r)), 'served but not in the OpenAPI document (service/api/spec/)').toEqual([]);
    expect(described.filter((r) => !served.has(r)), 'in the OpenAPI document but not served').toEqual([]);
  });

  it('is a valid OpenAPI 3.1 document whose schemas compile', () => {
    expect(doc).toMatchObject({ openapi: '3.1.0', jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema' });
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        for (const [status, answer] of Object.entries(op.responses)) {
          for (const media of Object.values(answer.content ?? {})) expect(() => validatorFor(media.schema), `${method} ${path} ${status}`).not.toThrow();
        }
      }
    }
  });

  it('matches every answer of every route', async () => {
    const t = '/v1/tenants/acme';
    for (const name of ['acme', 'globex']) await made('POST', '/v1/tenants', { name });
    await made('GET', '/v1/tenants');
    await made('PATCH', t, { testFailoverMaxHours: 2, quotas: { protectedVms: 10 } });
    await made('POST', `${t}/tokens`, { ttl: '1h' });
    const identity = await enrolledAgent(svc, 'acme', '*.acme.example', 'hv1.acme.example');
    await new SimAgent(svc, identity, 'web01').register([{ id: 'disk0', virtualSize: 1 << 20 }]);
    await made('POST', `${t}/authorizations`, { pattern: 'hv2.acme.example' });
    await made('GET', '/v1/vms');
    await made('GET', '/v1/vms?tenant=acme');
    await made('GET', `${t}/vms/web01/points`);

    // The hardware a failover gets, and NICs with their failover settings over a DR network.
    const hw = await made<Record<string, unknown>>('GET', `${t}/vms/web01/hardware`);
    await made('PUT', `${t}/vms/web01/hardware`, { ...hw, cpus: 2 });
    // UEFI variables from a file on the service host (an OVMF VARS file is 128 KiB to 4 MiB).
    const vars = join(env.dir, 'OVMF_VARS.fd');
    await writeFile(vars, Buffer.alloc(128 << 10, 0xff));
    await made('POST', `${t}/vms/web01/nvram`, { path: vars });
    await made('POST', '/v1/networks', { name: 'dr-prod', kind: 'production', bridge: 'br-dr0', vlan: 120, hosts: ['fo1'] });
    await made('GET', '/v1/networks');
    await made('GET', '/v1/networks/dr-prod');
    await made('POST', '/v1/networks/dr-prod/grants', { tenant: 'acme' });
    await made('POST', '/v1/networks/dr-prod/grants', { tenant: 'acme' });
    await made('GET', `${t}/networks`);
    const mapping = { kind: 'production', source: '192.168.10.0/24', target: '10.50.10.0/24', gateway: '10.50.10.1', dns: ['10.50.10.2'], network: 'dr-prod' };
    await made('POST', `${t}/network-mappings`, mapping);
    await made('PUT', `${t}/network-mappings`, { mappings: [mapping] });
    await made('GET', `${t}/network-mappings`);
    const mac = '52:54:00:00:00:01';
    await made('PUT', `${t}/vms/web01/nics`, { nics: [{ mac, model: 'virtio', production: { mode: 'dhcp', network: 'dr-prod' }, reportedAddresses: ['192.168.10.5/24'] }] });
    await made('GET', `${t}/vms/web01/nics`);
    await made('GET', `${t}/vms/web01/nics/${mac}`);
    await made('PUT', `${t}/vms/web01/nics/${mac}`, { model: 'virtio', production: { mode: 'static', addresses: ['10.50.10.5/24'], gateway4: '10.50.10.1', network: 'dr-prod' }, reportedAddresses: ['192.168.10.5/24'] });
    await made('GET', `${t}/vms/web01/ip-plan`);
    await made('GET', `${t}/vms/web01/ip-plan?kind=test`);
    const { csv } = await made<{ csv: string }>('GET', `${t}/nic-settings/export`);
    await made('POST', `${t}/nic-settings/import`, { csv, dryRun: true });

    // Public addresses: a pool, a grant, a mapping to the NIC's DR address.
    await made('POST', '/v1/public-ip-pools', { name: 'edge', addresses: ['203.0.113.8/30'] });
    await made('GET', '/v1/public-ip-pools');
    await made('GET', '/v1/public-ip-pools/edge');
    const grant = await made<{ addresses: string[] }>('POST', '/v1/public-ip-pools/edge/grants', { tenant: 'acme', count: 2 });
    await made('GET', `${t}/public-ips`);
    const [a1, a2] = grant.addresses;
    await made('POST', `${t}/public-ip-mappings`, { address: a1, vm: 'web01', mac, allow: ['tcp/22', 'icmp'] });
    await made('GET', `${t}/public-ip-mappings`);
    await made('GET', `${t}/public-ip-mappings/${a1}`);
    await made('PUT', `${t}/public-ip-mappings/${a1}`, { vm: 'web01', mac, allow: ['tcp/443'], test: true });
    await made('DELETE', `${t}/public-ip-mappings/${a1}`);
    await made('DELETE', `/v1/public-ip-pools/edge/grants/acme?address=${a2}`);
    await made('DELETE', '/v1/public-ip-pools/edge/grants/acme');
    await made('DELETE', '/v1/public-ip-pools/edge');

    // Recovery plans and a run (which the service may refuse: the VM has no replica yet).
    await made('POST', `${t}/plans`, { name: 'site', groups: [{ vms: ['web01'], after: [{ kind: 'manual', message: 'check the site' }] }] });
    await made('GET', `${t}/plans`);
    await made('GET', `${t}/plans/site`);
    await made('PUT', `${t}/plans/site`, { description: 'the whole site', groups: [{ name: 'web', vms: ['web01'] }] });
    await call('POST', `${t}/plans/site/runs`, { mode: 'test' });
    await made('GET', `${t}/plans/site/runs`);
    // A change with a stale If-Match is a 412 the document lists; with the current etag it goes through.
    const site = await made<{ etag: string }>('GET', `${t}/plans/site`);
    await made('PUT', `${t}/plans/site`, { description: 'changed under the next one', groups: [{ name: 'web', vms: ['web01'] }] });
    expect((await call('PUT', `${t}/plans/site`, { groups: [{ vms: ['web01'] }] }, { 'if-match': site.etag })).status).toBe(412);
    const now = await made<{ etag: string }>('GET', `${t}/plans/site`);
    expect((await call('PUT', `${t}/plans/site`, { groups: [{ name: 'web', vms: ['web01'] }] }, { 'if-match': now.etag })).status).toBe(200);
    expect((await call('GET', `${t}/plans?cursor=not-ours`)).status).toBe(400);
    await made('POST', `${t}/plans`, { name: 'gone', groups: [{ vms: ['web01'] }] });
    await made('DELETE', `${t}/plans/gone`);

    // Failovers: lists, and a request the service refuses (no replica yet).
    await call('POST', `${t}/vms/web01/failovers`, { kind: 'test' }, { 'idempotency-key': 'walk-1' });
    await made('GET', `${t}/vms/web01/failovers`);
    await made('GET', `${t}/failovers?active=true`);
    await made('GET', '/v1/failovers?tenant=acme');

    // Webhooks, a test event and its delivery to a receiver on loopback (so a lab's private targets are
    // allowed), delivered by the delivery worker's own method; events.
    const receiver = createServer((req, res) => req.resume().on('end', () => res.writeHead(204).end()));
    await new Promise<void>((done) => receiver.listen(0, '127.0.0.1', done));
    const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/lifeboat`;
    svc.ctx.config.webhooks.allowPrivateTargets = true;
    const redis = await connectRedis(TestRedisUrl);
    const queue = createWebhookQueue(redis, `lbtest-openapi-${randomBytes(4).toString('hex')}`);
    const deliverer = new Deliverer(svc.ctx, queue);
    for (const base of [t, '/v1']) {
      const sub = await made<{ id: string }>('POST', `${base}/webhooks`, { url: hookUrl, description: 'walk' });
      await made('GET', `${base}/webhooks`);
      await made('GET', `${base}/webhooks/${sub.id}`);
      await made('PATCH', `${base}/webhooks/${sub.id}`, { description: 'walk again', rotateSecret: true });
      const sent = await made<{ delivery: string }>('POST', `${base}/webhooks/${sub.id}/test`);
      expect(await deliverer.deliver({ id: sent.delivery, attempt: 0 })).toBe('succeeded');
      await made('GET', `${base}/webhooks/${sub.id}/deliveries`);
      await made('GET', `${base}/webhooks/${sub.id}/deliveries/${sent.delivery}`);
      await made('GET', `${base}/webhooks/${sub.id}/deliveries/${sent.delivery}/attempts`);
      await made('POST', `${base}/webhooks/${sub.id}/deliveries/${sent.delivery}/redeliver`);
      await made('DELETE', `${base}/webhooks/${sub.id}`);
    }
    await queue.obliterate({ force: true });
    await queue.close();
    redis.disconnect();
    await new Promise((done) => receiver.close(done));
    await made('GET', '/v1/webhooks?scope=hoster');
    await made('GET', `${t}/events`);
    await made('GET', '/v1/events?tenant=acme&limit=5');

    // Usage (JSON and CSV), quotas, admission.
    await made('GET', '/v1/usage?tenant=acme');
    await made('GET', '/v1/usage?format=csv');
    await made('GET', `${t}/quotas`);
    await made('GET', `${t}/admission`);
    await made('GET', `${t}/admission?kind=planned&vms=web01`);

    // API keys, portal users, the audit log.
    const key = await made<{ id: string }>('POST', '/v1/api-keys', { name: 'walk viewer', role: 'tenant-viewer', tenant: 'acme', expiresIn: '1d' });
    await made('GET', '/v1/api-keys');
    await made('GET', `/v1/api-keys/${key.id}`);
    await made('DELETE', `/v1/api-keys/${key.id}`);
    // A repeat of a mutation with its Idempotency-Key is the kept answer; the key on another request, a 422 problem.
    const once = { name: 'walk once', role: 'hoster-operator' };
    const first = await call<{ id: string }>('POST', '/v1/api-keys', once, { 'idempotency-key': 'walk-key-1' });
    const again = await call<{ id: string }>('POST', '/v1/api-keys', once, { 'idempotency-key': 'walk-key-1' });
    expect([first.status, again.status, again.body.id]).toEqual([201, 201, first.body.id]);
    expect((await call('POST', '/v1/api-keys', { ...once, name: 'walk twice' }, { 'idempotency-key': 'walk-key-1' })).status).toBe(422);
    await made('POST', '/v1/users', { username: 'ops@acme.example', role: 'tenant-viewer', tenant: 'acme' });
    await made('GET', '/v1/users?tenant=acme');
    await made('PATCH', '/v1/users/ops@acme.example', { role: 'tenant-operator' });
    await made('POST', '/v1/users/ops@acme.example/reset-links', { ttl: '1h' });
    await made('DELETE', '/v1/users/ops@acme.example');
    await made('GET', '/v1/audit?tenant=acme&limit=2');

    // What is left to take apart, then the service's own routes.
    await made('DELETE', `${t}/vms/web01/nics/${mac}`);
    await made('DELETE', `${t}/network-mappings?kind=production&source=192.168.10.0/24`);
    await made('DELETE', '/v1/networks/dr-prod/grants/acme');
    await made('DELETE', '/v1/networks/dr-prod');
    await made('POST', `${t}/revocations`, { server: 'hv1.acme.example' });
    for (const path of ['/healthz', '/metrics', '/v1/openapi.json']) await made('GET', path);

    // Then every route once more with ids that do not exist and an empty body: problems, mostly.
    for (const op of operations()) {
      const [method, path] = op.split(' ') as [string, string];
      await call(method, concrete(path), method === 'GET' || method === 'DELETE' ? undefined : {});
    }
    // Without a credential, a /v1 route is a 401 problem the document lists too.
    const anon = await fetch(`${svc.apiUrl}/v1/vms`);
    expect([anon.status, anon.headers.get('content-type')]).toEqual([401, 'application/problem+json']);

    expect(wrong).toEqual([]);
    const called = new Set(seen.map((s) => `${s.method.toUpperCase()} ${s.template}`));
    expect(operations().filter((o) => !called.has(o)), 'routes not called').toEqual([]);
    const succeeded = new Set(seen.filter((s) => s.status < 300).map((s) => `${s.method.toUpperCase()} ${s.template}`));
    console.log(`openapi walk: ${seen.length} answers checked, ${succeeded.size} of ${operations().length} routes answered with success: not ${operations().filter((o) => !succeeded.has(o)).join(', ')}`);
  });
});
