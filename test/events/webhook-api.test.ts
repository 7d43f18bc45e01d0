/**
 * The webhook routes and CLI with the real service (PostgreSQL catalog, API over HTTP): tenant roles
 * see only their tenant's subscriptions (another tenant's token gets 404 on every route, as if
 * absent), a viewer reads but does not act, hoster-wide routes are the hoster's, bad input is one
 * clear 4xx, the secret is shown once, and `lifeboat-service webhook …` drives it with --json.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningService } from '../../service/runner.js';
import { startService } from '../../service/runner.js';
import { signApiToken } from '../../service/trust/tokens.js';
import { freePort, runBin } from '../helpers.js';
import type { TestEnv } from '../service/helpers.js';
import { operator, testEnv } from '../service/helpers.js';

let env: TestEnv;
let svc: RunningService;
let admin: string;
let viewer: string;
let other: string;

beforeAll(async () => {
  const apiPort = await freePort();
  env = await testEnv((f) => {
    f.api = { ...(f.api as object), port: apiPort };
  });
  svc = await startService(env.config, { workers: false, failoverHost: false, enqueue: async () => undefined });
  for (const name of ['acme', 'globex']) expect((await operator(svc, 'POST', '/v1/tenants', { name })).status).toBe(201);
  admin = await signApiToken(svc.ctx.signer, { role: 'tenant-admin', tenant: 'acme', sub: 'alice' }, 600);
  viewer = await signApiToken(svc.ctx.signer, { role: 'tenant-viewer', tenant: 'acme', sub: 'vic' }, 600);
  other = await signApiToken(svc.ctx.signer, { role: 'tenant-admin', tenant: 'globex', sub: 'mallory' }, 600);
}, 60_000);

afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

type Sub = { id: string; tenant: string | null; url: string; types: string[]; enabled: boolean; secret?: string };

describe('webhook API', () => {
  it('creates a tenant subscription, shows its secret once, and keeps it from other tenants', async () => {
    const made = await operator<Sub>(svc, 'POST', '/v1/tenants/acme/webhooks', { url: 'https://hooks.acme.example/lifeboat', types: ['failover.step_changed', 'point.created'] }, admin);
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    expect(made.body).toMatchObject({ tenant: 'acme', enabled: true, types: ['failover.step_changed', 'point.created'] });
    expect(made.body.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    const id = made.body.id;
    const read = await operator<Sub>(svc, 'GET', `/v1/tenants/acme/webhooks/${id}`, undefined, viewer);
    expect(read.status).toBe(200);
    expect(read.body.secret).toBeUndefined();
    expect(JSON.stringify((await operator(svc, 'GET', '/v1/tenants/acme/webhooks', undefined, viewer)).body)).not.toContain('whsec_');

    const test = await operator<{ event: string; delivery: string }>(svc, 'POST', `/v1/tenants/acme/webhooks/${id}/test`, {}, admin);
    expect(test.status).toBe(202);
    const d = test.body.delivery;
    const delivery = await operator<{ status: string; type: string; payload: { type: string; data: { subscription: string } }; attemptLog: unknown[] }>(svc, 'GET', `/v1/tenants/acme/webhooks/${id}/deliveries/${d}`, undefined, viewer);
    expect(delivery.body).toMatchObject({ status: 'pending', type: 'webhook.test', payload: { type: 'webhook.test', data: { subscription: id } }, attemptLog: [] });
    expect((await operator(svc, 'POST', `/v1/tenants/acme/webhooks/${id}/deliveries/${d}/redeliver`, {}, admin)).status).toBe(409);
    const metrics = await (await fetch(`${svc.apiUrl}/metrics`)).text();
    expect(metrics).toMatch(/^lifeboat_webhook_deliveries\{status="pending"\} 1$/m);
    expect(metrics).toMatch(/^lifeboat_webhook_subscriptions\{enabled="true"\} 1$/m);

    // Another tenant's admin: every route of acme's subscription answers 404, as for one that does not exist.
    for (const [method, path] of [
      ['GET', '/v1/tenants/acme/webhooks'], ['POST', '/v1/tenants/acme/webhooks'], ['GET', `/v1/tenants/acme/webhooks/${id}`], ['PATCH', `/v1/tenants/acme/webhooks/${id}`],
      ['DELETE', `/v1/tenants/acme/webhooks/${id}`], ['POST', `/v1/tenants/acme/webhooks/${id}/test`], ['GET', `/v1/tenants/acme/webhooks/${id}/deliveries`],
      ['GET', `/v1/tenants/acme/webhooks/${id}/deliveries/${d}`], ['GET', `/v1/tenants/acme/webhooks/${id}/deliveries/${d}/attempts`],
      ['POST', `/v1/tenants/acme/webhooks/${id}/deliveries/${d}/redeliver`], ['GET', '/v1/tenants/acme/events'],
      // …and through its own tenant's path too.
      ['GET', `/v1/tenants/globex/webhooks/${id}`], ['PATCH', `/v1/tenants/globex/webhooks/${id}`], ['DELETE', `/v1/tenants/globex/webhooks/${id}`],
      ['GET', `/v1/tenants/globex/webhooks/${id}/deliveries/${d}`], ['POST', `/v1/tenants/globex/webhooks/${id}/deliveries/${d}/redeliver`],
    ] as const) {
      const r = await operator(svc, method, path, method === 'GET' || method === 'DELETE' ? undefined : { url: 'https://evil.example/' }, other);
      expect(r.status, `${method} ${path}: ${JSON.stringify(r.body)}`).toBe(404);
    }
    expect((await operator<{ webhooks: Sub[] }>(svc, 'GET', '/v1/tenants/globex/webhooks', undefined, other)).body.webhooks).toEqual([]);
    // Hoster-wide routes are not for tenant roles.
    for (const path of ['/v1/webhooks', `/v1/webhooks/${id}`, '/v1/events']) expect((await operator(svc, 'GET', path, undefined, admin)).status).toBe(403);
    // A tenant-operator sends a test event and redelivers, but does not change the subscription.
    const operatorToken = await signApiToken(svc.ctx.signer, { role: 'tenant-operator', tenant: 'acme', sub: 'otto' }, 600);
    expect((await operator(svc, 'POST', `/v1/tenants/acme/webhooks/${id}/test`, {}, operatorToken)).status).toBe(202);
    expect((await operator(svc, 'PATCH', `/v1/tenants/acme/webhooks/${id}`, { enabled: false }, operatorToken)).status).toBe(403);
    expect((await operator(svc, 'POST', '/v1/tenants/acme/webhooks', { url: 'https://hooks.acme.example/2' }, operatorToken)).status).toBe(403);
    // A viewer reads but does not act.
    expect((await operator(svc, 'PATCH', `/v1/tenants/acme/webhooks/${id}`, { enabled: false }, viewer)).status).toBe(403);
    expect((await operator(svc, 'POST', `/v1/tenants/acme/webhooks/${id}/test`, {}, viewer)).status).toBe(403);
    // Still there, unchanged, for its own tenant.
    expect((await operator<Sub>(svc, 'GET', `/v1/tenants/acme/webhooks/${id}`, undefined, admin)).body).toMatchObject({ enabled: true, url: 'https://hooks.acme.example/lifeboat' });

    const rotated = await operator<Sub>(svc, 'PATCH', `/v1/tenants/acme/webhooks/${id}`, { rotateSecret: true, enabled: false }, admin);
    expect(rotated.body).toMatchObject({ enabled: false });
    expect(rotated.body.secret).toMatch(/^whsec_/);
    expect(rotated.body.secret).not.toBe(made.body.secret);
    expect((await operator(svc, 'DELETE', `/v1/tenants/acme/webhooks/${id}`, undefined, admin)).body).toEqual({ deleted: id });
    expect((await operator(svc, 'GET', `/v1/tenants/acme/webhooks/${id}`, undefined, admin)).status).toBe(404);
  });

  it('refuses bad input with one clear 4xx and stores nothing', async () => {
    const cases: [unknown, RegExp][] = [
      [{ url: 'http://hooks.example.com/x' }, /http:\/\/ is allowed only to a loopback address; use https/],
      [{ url: 'not a url' }, /is not a URL/],
      [{ url: 'https://user:pw@hooks.example.com/' }, /credentials in the URL are not allowed/],
      [{ url: 'https://hooks.example.com/', types: ['vm.exploded'] }, /no event type "vm.exploded"/],
      [{ url: 'https://hooks.example.com/', types: [] }, /types/],
      [{ url: 'https://hooks.example.com/', secret: 'hunter2' }, /secret: expected whsec_/],
      [{ url: 'https://hooks.example.com/', extra: 1 }, /unknown field extra/],
      // A tenant's receiver must be public (config webhooks.allowPrivateTargets says otherwise).
      [{ url: 'https://10.1.2.3/hook' }, /^url: 10\.1\.2\.3 is a private address; a tenant's receiver must be a public address$/],
      [{ url: 'https://[::1]:8443/hook' }, /^url: ::1 is a loopback address/],
      [{ url: 'http://localhost:8080/hook' }, /^url: localhost is the service's own host/],
      [{ url: 'https://169.254.169.254/latest/meta-data' }, /169\.254\.169\.254 is a linkLocal address/],
    ];
    for (const [body, message] of cases) {
      const r = await operator<{ detail: string }>(svc, 'POST', '/v1/tenants/acme/webhooks', body, admin);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.detail).toMatch(message);
    }
    expect((await operator(svc, 'POST', '/v1/tenants/nope/webhooks', { url: 'https://hooks.example.com/' })).status).toBe(404);
    expect((await operator(svc, 'GET', '/v1/tenants/acme/webhooks/whs_nope/deliveries?status=lost', undefined, admin)).status).toBe(404);
    expect((await operator<{ webhooks: Sub[] }>(svc, 'GET', '/v1/tenants/acme/webhooks', undefined, admin)).body.webhooks).toEqual([]);
  });

  it('drives subscriptions from the CLI with --json and plain lines, and says a mistake in one line', async () => {
    const run = (args: string[]) => runBin('service', [...args, '--config', env.config.path]);
    const made = await run(['webhook', 'create', '--url', 'https://hooks.acme.example/lifeboat', '--tenant', 'acme', '--types', 'failover.step_changed,quota.reached', '--json']);
    expect(made.code, made.stderr).toBe(0);
    const sub = JSON.parse(made.stdout) as Sub;
    expect(sub).toMatchObject({ tenant: 'acme', types: ['failover.step_changed', 'quota.reached'] });
    expect(sub.secret).toMatch(/^whsec_/);
    // The hoster's own subscription may point into its own network.
    const hoster = await run(['webhook', 'create', '--url', 'http://127.0.0.1:9/hook']);
    expect(hoster.code, hoster.stderr).toBe(0);
    expect(hoster.stdout).toMatch(/^whs_\S+\t\(hoster\)\tenabled\t\*\thttp:\/\/127\.0\.0\.1:9\/hook\nsecret\twhsec_\S+\t\(shown only now/);
    const list = JSON.parse((await run(['webhook', 'list', '--tenant', 'acme', '--json'])).stdout) as Sub[];
    expect(list.map((s) => s.id)).toEqual([sub.id]);
    const test = JSON.parse((await run(['webhook', 'test', sub.id, '--json'])).stdout) as { delivery: string };
    const deliveries = JSON.parse((await run(['webhook', 'deliveries', sub.id, '--json'])).stdout) as { id: string; status: string }[];
    expect(deliveries).toEqual([expect.objectContaining({ id: test.delivery, status: 'pending' })]);
    const again = await run(['webhook', 'redeliver', sub.id, test.delivery]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^lifeboat-service: delivery msg_\S+ is still pending/);
    expect(again.stderr.trim().split('\n')).toHaveLength(1);
    const bad = await run(['webhook', 'create', '--url', 'ftp://x', '--tenant', 'acme']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^lifeboat-service: url: ftp:\/\/ is allowed only to a loopback address; use https\n$/);
    expect((await run(['webhook', '--help'])).stdout).toMatch(/create.*\n(.|\n)*redeliver/);
    expect((await run(['webhook', 'delete', sub.id])).stdout).toBe(`deleted ${sub.id}\n`);
    expect((await run(['webhook', 'delete', sub.id])).stderr).toMatch(/no webhook subscription/);
  }, 120_000);
});
