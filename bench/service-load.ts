/**
 * npm run bench -- load: simulated VMs, each committing a small sealed log every 30 seconds (phases
 * spread evenly), against one `lifeboat-service serve` (no embedded workers) and one
 * `lifeboat-service worker`, both child processes on a PostgreSQL catalog and Redis. Reports the
 * sustained commits per second and the p50/p99 time from commit to applied (from the catalog's own
 * clock). Goal: p99 under 5 s. The peer is the offered load: commits/s achieved against commits/s
 * asked for.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import pg from 'pg';
import type { PublicJwk } from '../shared/crypto/keys.js';
import { writeLog } from '../shared/log/index.js';
import { collect, memorySource } from '../shared/log/testing.js';
import { freePort, httpsJson, newKeyAndCsr } from '../test/service/helpers.js';
import type { TlsIdentity } from '../test/service/helpers.js';
import type { Benchmark, BenchRow } from './lib.js';

const bin = resolve(import.meta.dirname, '..', 'bin', 'lifeboat-service.js');
const PgUrl = process.env.LIFEBOAT_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
const CycleMs = 30_000;
const DiskBytes = 1 << 20;

function start(args: string[]): Promise<ChildProcess> {
  return new Promise((resolveStart, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'ignore'] });
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`lifeboat-service ${args[0]} exited ${code}`)));
    child.stdout!.once('data', () => resolveStart(child));
  });
}

async function run(ctx: { workDir: string; quick: boolean }): Promise<BenchRow[]> {
  const vms = ctx.quick ? 100 : 1000;
  const durationMs = ctx.quick ? 60_000 : 180_000;
  const dir = join(ctx.workDir, 'load');
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const schema = `bench_${randomBytes(4).toString('hex')}`;
  const children: ChildProcess[] = [];
  try {
    const { initDataDir } = await import('../service/config/init.js');
    const { configPath } = await initDataDir({ dataDir: join(dir, 'data'), publicHost: 'localhost' });
    const file = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, Record<string, unknown>>;
    const agentPort = await freePort();
    Object.assign(file, { catalog: { kind: 'postgres', url: PgUrl, schema }, embeddedWorkers: false, logLevel: 'warn', replicaFormat: 'vhdx' });
    file.api!.port = await freePort();
    Object.assign(file.agentEndpoint!, { port: agentPort, publicUrl: `https://localhost:${agentPort}` });
    await writeFile(configPath, JSON.stringify(file));
    children.push(await start(['serve', '--config', configPath]));
    children.push(await start(['worker', '--config', configPath]));
    const api = `http://127.0.0.1:${file.api!.port}`;
    const agentUrl = `https://127.0.0.1:${agentPort}`;
    const caPem = await readFile(join(dir, 'data', 'keys', 'ca.crt'), 'utf8');
    const admin = (await readFile(join(dir, 'data', 'keys', 'admin.token'), 'utf8')).trim();
    const op = async (path: string, body: unknown) => (await fetch(`${api}${path}`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })).json() as Promise<Record<string, unknown>>;
    await op('/v1/tenants', { name: 'load' });
    await op('/v1/tenants/load/authorizations', { pattern: '*' });
    const { token } = await op('/v1/tenants/load/tokens', {}) as { token: string };
    const { keyPem, csrPem } = await newKeyAndCsr();
    const enrolled = await httpsJson<{ certificate: string; tenantReplicaKey: PublicJwk }>(`${agentUrl}/v1/enroll`, { method: 'POST', body: { token, serverName: 'hv.load.test', csr: csrPem }, caPem });
    const id: TlsIdentity = { keyPem, certPem: enrolled.body.certificate };
    const recipient = enrolled.body.tenantReplicaKey;
    const call = (method: string, path: string, body?: unknown) => httpsJson<Record<string, unknown>>(`${agentUrl}${path}`, { method, caPem, identity: id, ...(body === undefined ? {} : { body }) });

    const ship = async (vm: string, kind: 'chunk' | 'log', sequence: number) => {
      const disk = Buffer.alloc(DiskBytes);
      const offset = (sequence * 4096) % DiskBytes;
      randomBytes(4096).copy(disk, offset);
      const header = { tenant: 'load', vm, disk: 'd0', generation: 1, sequence, virtualSize: DiskBytes, kind: kind === 'chunk' ? 'full' as const : 'incremental' as const };
      const bytes = await collect(writeLog(header, memorySource(disk, [{ offset, length: 4096, kind: 'data' }]), { recipient }).sealed);
      const grant = (await call('POST', `/v1/vms/${vm}/disks/d0/grants`, kind === 'chunk' ? { kind, generation: 1, index: sequence } : { kind, generation: 1, sequence })).body as { url: string; key: string };
      await httpsJson(grant.url, { method: 'PUT', rawBody: bytes, caPem });
      const common = { key: grant.key, size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'), createdAt: new Date().toISOString() };
      if (kind === 'chunk') await call('POST', `/v1/vms/${vm}/disks/d0/chunks`, { generation: 1, index: sequence, ...common });
      else await call('POST', `/v1/vms/${vm}/disks/d0/commits`, { generation: 1, sequence, ...common, consistency: 'crash' });
    };
    process.stderr.write(`bench: load: registering ${vms} VMs with their initial copies\n`);
    const names = Array.from({ length: vms }, (_, i) => `vm${i}`);
    for (let i = 0; i < names.length; i += 20) {
      await Promise.all(names.slice(i, i + 20).map(async (vm) => {
        await call('PUT', `/v1/vms/${vm}`, { disks: [{ id: 'd0', virtualSize: DiskBytes, format: 'raw' }], frequency: '30s', history: 0, appConsistentEvery: 0, compression: 'zstd' });
        await ship(vm, 'chunk', 0);
        await call('POST', `/v1/vms/${vm}/disks/d0/initial`, { generation: 1, mode: 'full', chunkCount: 1, consistency: 'crash', createdAt: new Date().toISOString() });
      }));
    }

    process.stderr.write(`bench: load: ${vms} VMs committing every 30 s for ${durationMs / 1000} s\n`);
    const t0 = Date.now();
    const inflight: Promise<void>[] = [];
    let failures = 0;
    const events = names.flatMap((vm, i) => {
      const out: { at: number; vm: string; seq: number }[] = [];
      for (let at = (i / vms) * CycleMs, seq = 1; at < durationMs; at += CycleMs, seq++) out.push({ at, vm, seq });
      return out;
    }).sort((a, b) => a.at - b.at);
    for (const e of events) {
      const wait = t0 + e.at - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      inflight.push(ship(e.vm, 'log', e.seq).catch(() => { failures++; }));
    }
    await Promise.all(inflight);
    const offeredSeconds = (Date.now() - t0) / 1000;
    const client = new pg.Client({ connectionString: PgUrl });
    await client.connect();
    try {
      for (;;) {
        const { rows } = await client.query(`SELECT count(*)::int AS n FROM ${schema}.logs WHERE kind = 'log' AND status = 'pending'`);
        if (rows[0].n === 0 || Date.now() - t0 > durationMs + 120_000) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      const { rows } = await client.query(`SELECT count(*)::int AS n,
          percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - committed_at)) AS p50,
          percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - committed_at)) AS p99,
          extract(epoch FROM max(applied_at) - min(committed_at)) AS span
        FROM ${schema}.logs WHERE kind = 'log' AND status = 'applied'`);
      const r = rows[0] as { n: number; p50: number; p99: number; span: number };
      const asked = events.length / offeredSeconds;
      const got = r.n / Number(r.span);
      return [
        { name: `load ${vms} VMs: commits applied per second`, ours: `${got.toFixed(1)}/s`, peer: `offered ${asked.toFixed(1)}/s`, ratio: (got / asked).toFixed(2), goal: `≥ 0.95, ${failures} failed`, ok: got / asked >= 0.95 && failures === 0 },
        { name: `load ${vms} VMs: commit → applied p50 / p99`, ours: `${Number(r.p50).toFixed(2)} s / ${Number(r.p99).toFixed(2)} s`, peer: '-', ratio: '-', goal: 'p99 < 5 s', ok: Number(r.p99) < 5 },
      ];
    } finally {
      await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
      await client.end();
    }
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  }
}

export const loadBench: Benchmark = {
  name: 'load',
  description: 'simulated VMs committing a small log every 30 s against one serve and one worker: commits/s, commit → applied p50/p99',
  run,
};
