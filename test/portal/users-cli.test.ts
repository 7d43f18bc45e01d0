/**
 * `lifeboat-service user …` as an operator runs it, against a running service: create (password on
 * standard input or none), list, set-role, reset-link, remove, each with --json and one clear line
 * for bad input; a role change or removal ends the user's portal sessions; the routes are the
 * hoster-operator's only.
 */
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningService } from '../../service/runner.js';
import { startService } from '../../service/runner.js';
import { signApiToken } from '../../service/trust/tokens.js';
import { runBin } from '../helpers.js';
import type { TestEnv } from '../service/helpers.js';
import { freePort, operator, testEnv } from '../service/helpers.js';

let env: TestEnv;
let svc: RunningService;
const Secret = 'a long enough password';

function cli(args: string[], input?: string) {
  return runBin('service', ['user', ...args, '--config', env.config.path], input === undefined ? {} : { input });
}

/** Signs in through the portal's form with fetch; the session cookie, or undefined when refused. */
async function portalSession(username: string, password: string): Promise<string | undefined> {
  const form = await fetch(`${svc.apiUrl}/portal/sign-in`);
  const pre = form.headers.get('set-cookie')!.split(';')[0]!;
  const res = await fetch(`${svc.apiUrl}/portal/sign-in`, {
    method: 'POST', redirect: 'manual', headers: { cookie: pre, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ _csrf: pre.split('=')[1]!, username, password }).toString(),
  });
  return res.status === 303 ? res.headers.getSetCookie().find((c) => c.startsWith('lifeboat_session='))!.split(';')[0] : undefined;
}

async function dashboardStatus(cookie: string): Promise<string> {
  const res = await fetch(`${svc.apiUrl}/portal/t/acme`, { redirect: 'manual', headers: { cookie } });
  return `${res.status} ${res.headers.get('location') ?? ''}`.trim();
}

beforeAll(async () => {
  const port = await freePort();
  env = await testEnv((c) => {
    c.api = { ...(c.api as object), port };
  });
  svc = await startService(env.config, { apiPort: port, workers: false, log: pino({ level: 'silent' }), enqueue: async () => undefined });
  expect((await operator(svc, 'POST', '/v1/tenants', { name: 'acme' })).status).toBe(201);
});
afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

describe('lifeboat-service user', () => {
  it('lists its subcommands in --help', async () => {
    const r = await runBin('service', ['user', '--help']);
    expect(r.code).toBe(0);
    for (const sub of ['create', 'list', 'set-role', 'remove', 'reset-link']) expect(r.stdout).toContain(sub);
  });

  it('creates users, with a password from standard input or none, and lists them', async () => {
    const a = await cli(['create', 'Alice@Acme.example', '--role', 'tenant-admin', '--tenant', 'acme', '--password-stdin', '--json'], `${Secret}\n`);
    expect(a.stderr).toBe('');
    expect(JSON.parse(a.stdout)).toMatchObject({ username: 'alice@acme.example', tenant: 'acme', role: 'tenant-admin', hasPassword: true });
    const b = await cli(['create', 'bob', '--role', 'tenant-viewer', '--tenant', 'acme']);
    expect(b.stdout).toBe('created user bob (tenant-viewer of tenant acme); no password yet: lifeboat-service user reset-link bob\n');
    expect((await cli(['create', 'hoster1', '--role', 'hoster-admin', '--password-stdin'], Secret)).code).toBe(0);
    const list = JSON.parse((await cli(['list', '--tenant', 'acme', '--json'])).stdout) as { username: string }[];
    expect(list.map((u) => u.username)).toEqual(['alice@acme.example', 'bob']);
    expect((await cli(['list'])).stdout).toContain('hoster1  hoster-admin  (hoster)');
  });

  it('refuses bad input with one line and a non-zero exit, storing nothing', async () => {
    const cases: [string[], RegExp, string?][] = [
      [['create', 'carol', '--role', 'hoster-operator', '--tenant', 'acme'], /hoster's: give no tenant/],
      [['create', 'carol', '--role', 'tenant-viewer'], /needs a tenant/],
      [['create', 'carol', '--role', 'tenant-viewer', '--tenant', 'nosuch'], /no tenant nosuch/],
      [['create', 'carol', '--role', 'superuser', '--tenant', 'acme'], /role must be one of/],
      [['create', 'has space', '--role', 'tenant-viewer', '--tenant', 'acme'], /username "has space" must be/],
      [['create', 'carol', '--role', 'tenant-viewer', '--tenant', 'acme', '--password-stdin'], /at least 12 characters/, 'short'],
      [['create', 'bob', '--role', 'tenant-viewer', '--tenant', 'acme'], /user bob already exists/],
      [['set-role', 'bob', 'hoster-admin'], /not one of tenant-admin, tenant-operator, tenant-viewer/],
      [['remove', 'nobody'], /no user nobody/],
      [['reset-link', 'bob', '--ttl', '30d'], /between 1m and 7d/],
      [['list', '--tenant', 'nosuch'], /no tenant nosuch/],
    ];
    for (const [args, message, input] of cases) {
      const r = await cli(args, input);
      expect([args.join(' '), r.code]).toEqual([args.join(' '), 1]);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect(JSON.parse((await cli(['list', '--json'])).stdout).map((u: { username: string }) => u.username)).not.toContain('carol');
  });

  it('issues a one-time reset link that opens the portal\'s form', async () => {
    const r = JSON.parse((await cli(['reset-link', 'bob', '--json'])).stdout) as { url: string; expiresAt: string };
    expect(r.url).toMatch(new RegExp(`^${svc.apiUrl}/portal/reset/[A-Za-z0-9_-]{43}$`));
    expect((await fetch(r.url)).status).toBe(200);
    expect((await fetch(`${svc.apiUrl}/portal/reset/${'A'.repeat(43)}`)).status).toBe(404);
  });

  it('ends a user\'s sessions when the role changes or the user is removed', async () => {
    const session = (await portalSession('alice@acme.example', Secret))!;
    expect(await dashboardStatus(session)).toBe('200');
    const changed = JSON.parse((await cli(['set-role', 'alice@acme.example', 'tenant-viewer', '--json'])).stdout) as { role: string };
    expect(changed.role).toBe('tenant-viewer');
    expect(await dashboardStatus(session)).toBe('303 /portal/sign-in?ended=1');
    const again = (await portalSession('alice@acme.example', Secret))!;
    expect(await dashboardStatus(again)).toBe('200');
    expect((await cli(['remove', 'alice@acme.example'])).stdout).toBe('removed user alice@acme.example\n');
    expect(await dashboardStatus(again)).toBe('303 /portal/sign-in?ended=1');
    expect(await portalSession('alice@acme.example', Secret)).toBeUndefined();
  });

  it('keeps the user routes to the hoster\'s operators', async () => {
    const token = await signApiToken(svc.ctx.signer, { role: 'tenant-admin', tenant: 'acme', sub: 'someone' }, 60);
    expect((await operator(svc, 'GET', '/v1/users', undefined, token)).status).toBe(403);
    expect((await operator(svc, 'POST', '/v1/users', { username: 'eve', role: 'tenant-admin', tenant: 'acme', password: Secret }, token)).status).toBe(403);
  });
});
