/** The operator API: token checks, bad input, OpenAPI, health and metrics. */
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signApiToken } from '../../service/trust/tokens.js';
import type { TestEnv } from './helpers.js';
import { operator, testEnv, testService } from './helpers.js';

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
const adminToken = async () => (await readFile(svc.ctx.config.adminTokenFile, 'utf8')).trim();

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
});
afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

describe('operator API', () => {
  it('requires an operator token', async () => {
    const none = await fetch(`${svc.apiUrl}/v1/tenants`);
    expect(none.status).toBe(401);
    expect(none.headers.get('content-type')).toBe('application/problem+json');
    expect(((await none.json()) as { detail: string }).detail).toMatch(/operator API token is required/);
    const viewer = await signApiToken(svc.ctx.signer, { role: 'tenant-viewer', tenant: 'x', sub: 'v' }, 60);
    expect((await operator(svc, 'GET', '/v1/tenants', undefined, viewer)).status).toBe(403);
    expect((await operator(svc, 'GET', '/v1/tenants', undefined, 'a.b.c')).status).toBe(401);
  });

  it('refuses bad input with a 4xx naming the problem', async () => {
    expect((await operator(svc, 'POST', '/v1/tenants', { name: 'Bad Name' })).body).toMatchObject({ code: 'invalid_argument', status: 400, type: 'https://lifeboat.dev/problems/invalid_argument' });
    expect((await operator(svc, 'POST', '/v1/tenants', { name: 'ok', extra: 1 })).status).toBe(400);
    expect((await operator(svc, 'POST', '/v1/tenants', { name: 'dup' })).status).toBe(201);
    expect((await operator(svc, 'POST', '/v1/tenants', { name: 'dup' })).status).toBe(409);
    expect((await operator(svc, 'POST', '/v1/tenants/dup/authorizations', { pattern: 'a*b*' })).body).toMatchObject({ detail: expect.stringMatching(/at most one/) });
    expect((await operator(svc, 'POST', '/v1/tenants/nope/tokens', {})).status).toBe(404);
    expect((await operator(svc, 'POST', '/v1/tenants/dup/tokens', { ttl: '30d' })).status).toBe(400);
  });

  it('words bad bodies plainly, wants a JSON content type, takes any case of Bearer, and keeps 404s short', async () => {
    const admin = await signApiToken(svc.ctx.signer, { role: 'hoster-operator', sub: 'op' }, 60);
    const empty = await operator(svc, 'POST', '/v1/tenants', { name: '' });
    expect(empty.body).toEqual({
      type: 'https://lifeboat.dev/problems/invalid_argument', title: 'Invalid argument', status: 400, detail: 'name must not be empty', code: 'invalid_argument', requestId: expect.any(String),
    });
    expect((await operator(svc, 'POST', '/v1/tenants', {})).body).toMatchObject({ detail: 'name is missing' });
    expect((await operator(svc, 'POST', '/v1/tenants', { name: 5 })).body).toMatchObject({ detail: 'name must be a string' });
    expect((await operator(svc, 'POST', '/v1/tenants', { name: null })).body).toMatchObject({ detail: 'name must be a string' });
    expect((await operator(svc, 'POST', '/v1/tenants', { name: 'ok', extra: 1 })).body).toMatchObject({ detail: 'unknown field extra' });
    const post = (headers: Record<string, string>, body = '{"name":"typed"}') => fetch(`${svc.apiUrl}/v1/tenants`, { method: 'POST', headers, body });
    const plain = await post({ authorization: `Bearer ${admin}`, 'content-type': 'text/plain' });
    expect(plain.status).toBe(415);
    expect(((await plain.json()) as { detail: string }).detail).toMatch(/Content-Type: application\/json \(got text\/plain/);
    expect((await post({ authorization: `bearer ${admin}`, 'content-type': 'application/json; charset=utf-8' })).status).toBe(201);
    const long = await fetch(`${svc.apiUrl}/v1/${'x'.repeat(5000)}`, { headers: { authorization: `Bearer ${admin}` } });
    expect(long.status).toBe(404);
    expect(((await long.json()) as { detail: string }).detail.length).toBeLessThan(240);
  });

  it('answers problem details with the request id, the caller\'s when sane, in the body and the header', async () => {
    const given = await fetch(`${svc.apiUrl}/v1/tenants/nope/tokens`, { method: 'POST', headers: { authorization: `Bearer ${await adminToken()}`, 'content-type': 'application/json', 'x-request-id': 'req-42' }, body: '{}' });
    expect(given.status).toBe(404);
    expect(given.headers.get('x-request-id')).toBe('req-42');
    expect(await given.json()).toMatchObject({ type: 'https://lifeboat.dev/problems/not_found', status: 404, code: 'not_found', requestId: 'req-42' });
    const insane = await fetch(`${svc.apiUrl}/v1/tenants`, { headers: { authorization: `Bearer ${await adminToken()}`, 'x-request-id': 'a b"<script>' } });
    expect(insane.status).toBe(200);
    expect(insane.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const big = await fetch(`${svc.apiUrl}/v1/tenants`, { method: 'POST', headers: { authorization: `Bearer ${await adminToken()}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'x'.repeat(70_000) }) });
    expect(big.status).toBe(413);
    expect(big.headers.get('content-type')).toBe('application/problem+json');
    expect(big.headers.get('connection')).toBe('close');
    const body = (await big.json()) as { code: string; requestId: string };
    expect(body).toMatchObject({ code: 'too_large', status: 413, requestId: big.headers.get('x-request-id') });
  });

  it('serves health, metrics and an OpenAPI document of its routes', async () => {
    expect((await fetch(`${svc.apiUrl}/healthz`)).status).toBe(200);
    const metrics = await (await fetch(`${svc.apiUrl}/metrics`)).text();
    expect(metrics).toMatch(/lifeboat_http_requests_total\{surface="api",status="401"\} \d+/);
    const doc = (await (await fetch(`${svc.apiUrl}/v1/openapi.json`)).json()) as { openapi: string; paths: Record<string, Record<string, { requestBody?: unknown }>> };
    expect(doc.openapi).toBe('3.1.0');
    expect(Object.keys(doc.paths)).toContain('/v1/tenants/{tenant}/authorizations');
    expect(JSON.stringify(doc.paths['/v1/tenants']!.post!.requestBody)).toContain('"additionalProperties":false');
  });
});
