/**
 * GET /v1/usage and `lifeboat-service usage` against the real service and PostgreSQL: hoster roles
 * see every tenant or one, a tenant role sees its own only (another tenant's name answers 404, as if
 * it did not exist), JSON and CSV carry the same figures, bad ranges are one clear 400.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordReplicaBytes } from '../../service/catalog/usage.js';
import { signApiToken } from '../../service/trust/tokens.js';
import { runBin } from '../helpers.js';
import type { TestEnv } from './helpers.js';
import { operator, testEnv, testService } from './helpers.js';

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
const range = 'from=2026-01-01&to=2026-01-03';

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  for (const name of ['acme', 'globex']) expect((await operator(svc, 'POST', '/v1/tenants', { name })).status).toBe(201);
  // acme holds 2 GB from noon on the 1st, 1 GB from midnight on the 2nd; globex 5 GB from the 2nd at 06:00.
  await recordReplicaBytes(svc.ctx.db, 'acme', new Date('2026-01-01T12:00:00Z'), 2e9);
  await recordReplicaBytes(svc.ctx.db, 'acme', new Date('2026-01-02T00:00:00Z'), 1e9);
  await recordReplicaBytes(svc.ctx.db, 'globex', new Date('2026-01-02T06:00:00Z'), 5e9);
}, 60_000);
afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

type Report = { until: string; tenants: { tenant: string; days: { day: string; replicaGbHours: number }[]; total: { replicaGbHours: number } }[] };

describe('usage API', () => {
  it('gives the hoster every tenant per day, or one tenant', async () => {
    const all = await operator<Report>(svc, 'GET', `/v1/usage?${range}`);
    expect(all.status).toBe(200);
    expect(all.body.until).toBe('2026-01-03T00:00:00.000Z');
    expect(all.body.tenants.map((t) => [t.tenant, t.days.map((d) => [d.day, d.replicaGbHours]), t.total.replicaGbHours])).toEqual([
      ['acme', [['2026-01-01', 24], ['2026-01-02', 24]], 48],
      ['globex', [['2026-01-02', 90]], 90],
    ]);
    const one = await operator<Report>(svc, 'GET', `/v1/usage?${range}&tenant=globex`);
    expect(one.body.tenants.map((t) => t.tenant)).toEqual(['globex']);
    expect((await operator(svc, 'GET', `/v1/usage?${range}&tenant=nobody`)).status).toBe(404);
  });

  it('shows a tenant role its own tenant only, and another tenant as absent', async () => {
    const viewer = await signApiToken(svc.ctx.signer, { role: 'tenant-viewer', tenant: 'acme', sub: 'v' }, 60);
    const own = await operator<Report>(svc, 'GET', `/v1/usage?${range}`, undefined, viewer);
    expect(own.status).toBe(200);
    expect(own.body.tenants.map((t) => t.tenant)).toEqual(['acme']);
    expect((await operator<Report>(svc, 'GET', `/v1/usage?${range}&tenant=acme`, undefined, viewer)).body).toEqual(own.body);
    const other = await operator(svc, 'GET', `/v1/usage?${range}&tenant=globex`, undefined, viewer);
    expect(other.status).toBe(404);
    expect(JSON.stringify(other.body)).not.toContain('replicaGbHours');
    const otherAdmin = await signApiToken(svc.ctx.signer, { role: 'tenant-admin', tenant: 'globex', sub: 'g' }, 60);
    expect((await operator(svc, 'GET', `/v1/usage?${range}&tenant=acme`, undefined, otherAdmin)).status).toBe(404);
  });

  it('answers CSV by Accept or format=csv, with the figures of the JSON', async () => {
    const admin = (await readFile(svc.ctx.config.adminTokenFile, 'utf8')).trim();
    const byAccept = await fetch(`${svc.apiUrl}/v1/usage?${range}`, { headers: { authorization: `Bearer ${admin}`, accept: 'text/csv' } });
    expect(byAccept.headers.get('content-type')).toMatch(/^text\/csv/);
    const text = await byAccept.text();
    const byFormat = await fetch(`${svc.apiUrl}/v1/usage?${range}&format=csv`, { headers: { authorization: `Bearer ${admin}` } });
    expect(await byFormat.text()).toBe(text);
    const rows = parse(text, { columns: true }) as Record<string, string>[];
    expect(rows.map((r) => [r.tenant, r.day, r.replicaGbHours])).toEqual([['acme', '2026-01-01', '24.000000'], ['acme', '2026-01-02', '24.000000'], ['globex', '2026-01-02', '90.000000']]);
  });

  it('refuses a bad range or parameter with one clear 400', async () => {
    for (const [q, message] of [
      ['from=yesterday', /from must be a date \(2026-12-01\) or a time with its zone/],
      ['from=2026-01-03&to=2026-01-01', /to \(2026-01-01T00:00:00.000Z\) must be after from/],
      ['from=2020-01-01&to=2026-01-01', /at most 366 days/],
      ['format=xml', /format must be one of/],
      ['color=red', /unknown/],
      ['from=2026-01-01T10:00:00', /time with its zone/],
    ] as const) {
      const r = await operator<{ detail: string }>(svc, 'GET', `/v1/usage?${q}`);
      expect(r.status, q).toBe(400);
      expect(r.body.detail, q).toMatch(message);
    }
  });

  it('is what lifeboat-service usage prints, as a table, JSON or CSV', async () => {
    // Beside the service's own config: its paths are relative to the file.
    const config = join(dirname(env.config.path), 'usage-cli.json');
    const file = JSON.parse(await readFile(env.config.path, 'utf8')) as { api: Record<string, unknown> };
    file.api = { ...file.api, host: '127.0.0.1', port: Number(new URL(svc.apiUrl).port) };
    await writeFile(config, JSON.stringify(file));
    const args = ['usage', '--config', config, '--from', '2026-01-01', '--to', '2026-01-03'];
    const csv = await runBin('service', [...args, '--csv']);
    expect(csv.code, csv.stderr).toBe(0);
    expect(csv.stdout.split('\n')[3]).toMatch(/^globex,2026-01-02,0\.000000,90\.000000,/);
    const json = await runBin('service', [...args, '--json', '--tenant', 'acme']);
    expect((JSON.parse(json.stdout) as Report).tenants[0]!.total.replicaGbHours).toBe(48);
    const table = await runBin('service', args);
    expect(table.stdout).toMatch(/globex\n.*replica GB-h.*\n2026-01-02 .* 90 /);
    const bad = await runBin('service', ['usage', '--config', config, '--from', 'soon']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/from must be a date/);
  }, 60_000);
});
