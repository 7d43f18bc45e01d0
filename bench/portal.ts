/**
 * Portal bench: the dashboard of a tenant with 1,000 protected VMs (2 disks each, a 30 s frequency,
 * every cycle of the last hour received and applied: 240,000 logs), rendered server-side and fetched
 * over HTTP by a signed-in user, on PostgreSQL and on the embedded PGlite. Reports p50 and p99 of the
 * whole page and of the rows fragment the page polls, beside the catalog's single overview query
 * alone (the peer: what the page costs above the query it is built from). Goal: under 200 ms.
 *
 * The fleet is written straight into the catalog (copies of one VM the agent registered), so the
 * figures are the portal's and the catalog's, not the replication's.
 */
import { createUser } from '../service/api/users.js';
import type { Queryable } from '../service/catalog/db.js';
import { tenantOverview } from '../service/replication/overview.js';
import { SimAgent } from '../test/service/agent-sim.js';
import { enrolledAgent, testEnv, testService } from '../test/service/helpers.js';
import type { Benchmark, BenchRow } from './lib.js';

const Password = 'correct horse battery staple';
const GoalMs = 200;

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

async function timed(n: number, fn: () => Promise<unknown>): Promise<{ p50: number; p99: number }> {
  await fn();
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  return { p50: quantile(ms, 0.5), p99: quantile(ms, 0.99) };
}

/** 1,000 copies of the registered VM, two disks each, and an hour of applied 30 s cycles per disk. */
async function fleet(db: Queryable, vms: number, logsPerDisk: number): Promise<void> {
  await db.query(
    `INSERT INTO vms (tenant, name, display_name, server_fqdn, authorization_id, trust_group, storage_dir, frequency_seconds, history, app_consistent_every, compression, protected)
     SELECT v.tenant, 'vm-' || lpad(g::text, 4, '0'), NULL, v.server_fqdn, v.authorization_id, v.trust_group, v.storage_dir || '-' || g, 30, v.history, v.app_consistent_every, v.compression, true
     FROM vms v, generate_series(1, $1) g WHERE v.tenant = 'acme' AND v.name = 'seed'`, [vms]);
  await db.query(
    `INSERT INTO disks (tenant, vm, id, virtual_size, source_format, replica_dir, generation, base_complete, applied_sequence, state, last_applied_at)
     SELECT 'acme', v.name, 'd' || k, 64 << 30, 'raw', 'bench/' || v.name || '/d' || k, 1, true, $1, 'replicating', now() - interval '20 seconds'
     FROM vms v, generate_series(0, 1) k WHERE v.tenant = 'acme' AND v.name <> 'seed'`, [logsPerDisk]);
  await db.query(
    `INSERT INTO logs (tenant, vm, disk, kind, generation, sequence, key, size, sha256, consistency, created_at, captured_at, committed_at, applied_at, status)
     SELECT d.tenant, d.vm, d.id, 'log', 1, s, 'bench/' || d.vm || '/' || d.id || '/' || s, 65536 + (s * 7919) % 1048576, '', 'crash',
            now() - ($1 - s) * interval '30 seconds', now() - ($1 - s) * interval '30 seconds' - interval '1 second',
            now() - ($1 - s) * interval '30 seconds', now() - ($1 - s) * interval '30 seconds' + interval '5 seconds', 'applied'
     FROM disks d, generate_series(1, $1) s WHERE d.tenant = 'acme' AND d.vm <> 'seed'`, [logsPerDisk]);
  // As autovacuum would after such a load: the planner's statistics of the new rows.
  await db.query('ANALYZE');
}

async function signedIn(apiUrl: string, username: string): Promise<string> {
  const form = new URLSearchParams({ username, password: Password });
  const page = await fetch(`${apiUrl}/portal/sign-in`);
  const cookie = page.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await page.text())?.[1];
  if (csrf) form.set('_csrf', csrf);
  const res = await fetch(`${apiUrl}/portal/sign-in`, { method: 'POST', body: form, redirect: 'manual', headers: { cookie } });
  const session = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  if (res.status !== 303 || !session) throw new Error(`bench portal: sign-in answered ${res.status}`);
  return session;
}

async function measure(catalog: 'postgres' | 'pglite', vms: number, logsPerDisk: number, runs: number): Promise<BenchRow[]> {
  const env = await testEnv(catalog === 'pglite' ? (c) => { c.catalog = { kind: 'pglite', dir: 'catalog' }; } : undefined);
  const svc = await testService(env);
  try {
    const id = await enrolledAgent(svc, 'acme', '*', 'hv1.acme.example');
    await new SimAgent(svc, id, 'seed').register([{ id: 'd0', virtualSize: 1 << 20 }]);
    process.stderr.write(`bench portal (${catalog}): writing ${vms} VMs and ${vms * 2 * logsPerDisk} logs\n`);
    await fleet(svc.ctx.db, vms, logsPerDisk);
    const username = `bench.${env.schema}@example.com`.replaceAll('_', '-');
    await createUser(svc.ctx, { username, role: 'tenant-viewer', tenant: 'acme', password: Password });
    const cookie = await signedIn(svc.apiUrl, username);
    const get = (path: string) => async () => {
      const res = await fetch(`${svc.apiUrl}${path}`, { headers: { cookie } });
      const html = await res.text();
      if (res.status !== 200 || (html.match(/<tr data-vm=/g) ?? []).length !== vms + 1) throw new Error(`bench portal: ${path} answered ${res.status} without every VM`);
    };
    const page = await timed(runs, get('/portal/t/acme'));
    const rows = await timed(runs, get('/portal/t/acme/rows'));
    const query = await timed(runs, () => tenantOverview(svc.ctx.db, 'acme'));
    const ms = (x: number) => `${x.toFixed(0)} ms`;
    const what = `${vms} VMs, ${catalog}`;
    return [
      { name: `portal: dashboard, ${what}, p50`, ours: ms(page.p50), peer: `query ${ms(query.p50)}`, ratio: (page.p50 / query.p50).toFixed(2), goal: `< ${GoalMs} ms`, ok: page.p50 < GoalMs },
      { name: `portal: dashboard, ${what}, p99`, ours: ms(page.p99), peer: `query ${ms(query.p99)}`, ratio: (page.p99 / query.p99).toFixed(2), goal: `< ${GoalMs} ms`, ok: page.p99 < GoalMs },
      { name: `portal: live rows, ${what}, p50`, ours: ms(rows.p50), peer: `query ${ms(query.p50)}`, ratio: (rows.p50 / query.p50).toFixed(2), goal: `< ${GoalMs} ms`, ok: rows.p50 < GoalMs },
      { name: `portal: live rows, ${what}, p99`, ours: ms(rows.p99), peer: `query ${ms(query.p99)}`, ratio: (rows.p99 / query.p99).toFixed(2), goal: `< ${GoalMs} ms`, ok: rows.p99 < GoalMs },
    ];
  } finally {
    await svc.stop();
    await env.cleanup();
  }
}

export const portalBench: Benchmark = {
  name: 'portal',
  description: 'the dashboard of a tenant with 1,000 VMs rendered server-side: p50/p99 beside its one catalog query',
  async run(ctx) {
    const [vms, logsPerDisk, runs] = ctx.quick ? [200, 20, 20] : [1000, 120, 50];
    const rows: BenchRow[] = [];
    for (const catalog of ['postgres', 'pglite'] as const) if (!process.env.ONLY || process.env.ONLY === catalog) rows.push(...await measure(catalog, vms, logsPerDisk, runs));
    return rows;
  },
};
