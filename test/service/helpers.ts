/**
 * Service test helpers: a data directory made by init, a catalog in a fresh PostgreSQL schema with a
 * random name (dropped after), a running service on ephemeral ports, and a minimal agent that makes
 * keys and CSRs and speaks HTTPS with or without its client certificate.
 */
import 'reflect-metadata';
import { randomBytes, webcrypto, KeyObject } from 'node:crypto';
import { request } from 'node:https';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { Redis } from 'ioredis';
import pg from 'pg';
import pino from 'pino';
import type { PublicJwk } from '../../shared/crypto/keys.js';
import type { Config } from '../../service/config/config.js';
import { loadConfig } from '../../service/config/config.js';
import { initDataDir } from '../../service/config/init.js';
import type { RunningService } from '../../service/runner.js';
import { startService } from '../../service/runner.js';
import type { EnqueueMerge } from '../../service/replication/uploads.js';
import { Merger } from '../../service/workers/merger.js';
import { freePort, referee, scratchDir, TestPgUrl, TestRedisUrl } from '../helpers.js';

/** The tests' PostgreSQL database and Redis server (test/global-setup.ts). */
export const PgUrl = TestPgUrl;
export { TestRedisUrl };

export interface TestEnv {
  dir: string;
  config: Config;
  schema: string;
  cleanup(): Promise<void>;
}

/** init into a scratch directory, then point the catalog at a fresh schema of the test database. */
export async function testEnv(overrides: (c: Record<string, unknown>) => void = () => undefined): Promise<TestEnv> {
  const scratch = await scratchDir('lifeboat-svc-');
  const { configPath } = await initDataDir({ dataDir: join(scratch.path, 'data'), publicHost: 'localhost' });
  const schema = `t_${randomBytes(6).toString('hex')}`;
  const file = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, unknown>;
  file.catalog = { kind: 'postgres', url: PgUrl, schema };
  // The tests' shared Redis; a config without a URL would run a private redis-server per service.
  file.redis = { url: TestRedisUrl };
  file.replicaFormat = 'raw';
  const agentPort = await freePort();
  file.agentEndpoint = { ...(file.agentEndpoint as object), port: agentPort, publicUrl: `https://localhost:${agentPort}` };
  file.logLevel = 'silent';
  overrides(file);
  await writeFile(configPath, JSON.stringify(file));
  const config = await loadConfig(configPath);
  return {
    dir: scratch.path, config, schema,
    async cleanup() {
      const client = new pg.Client({ connectionString: PgUrl });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await client.end();
      await scratch.remove();
    },
  };
}

/** A port free right now (the kernel's pick), for a service whose public URL must be known up front. */
export { freePort };

/** A running service on ephemeral ports, without workers; merges are recorded, not run. */
export async function testService(env: TestEnv, enqueue?: EnqueueMerge): Promise<RunningService & { enqueued: { tenant: string; vm: string; disk: string }[] }> {
  const enqueued: { tenant: string; vm: string; disk: string }[] = [];
  const svc = await startService(env.config, {
    apiPort: 0, workers: false, log: pino({ level: 'silent' }),
    enqueue: enqueue ?? (async (ref) => {
      enqueued.push(ref);
    }),
  });
  return { ...svc, enqueued };
}

export interface HttpResult<T = unknown> {
  status: number;
  body: T;
}

export interface TlsIdentity {
  keyPem: string;
  certPem: string;
}

/** An HTTPS JSON call trusting only caPem, optionally with a client certificate. */
export function httpsJson<T = Record<string, unknown>>(url: string, options: { method?: string; body?: unknown; rawBody?: string | Buffer; caPem: string; identity?: TlsIdentity | undefined }): Promise<HttpResult<T>> {
  return new Promise((resolve, reject) => {
    const payload = options.rawBody ?? (options.body === undefined ? undefined : JSON.stringify(options.body));
    const req = request(url, {
      method: options.method ?? 'GET',
      ca: options.caPem,
      ...(options.identity ? { key: options.identity.keyPem, cert: options.identity.certPem } : {}),
      headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      agent: false,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = text.length > 0 ? JSON.parse(text) : undefined;
        } catch {
          // not JSON: keep the text
        }
        resolve({ status: res.statusCode ?? 0, body: body as T });
      });
    });
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** A new EC P-256 key and a CSR for it. */
export async function newKeyAndCsr(cn = 'agent'): Promise<{ keyPem: string; csrPem: string }> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${cn}`, keys, signingAlgorithm: alg });
  return { keyPem: KeyObject.from(keys.privateKey).export({ type: 'pkcs8', format: 'pem' }) as string, csrPem: csr.toString('pem') };
}

/** Operator API call with the admin token of the config. */
export async function operator<T = Record<string, unknown>>(svc: RunningService, method: string, path: string, body?: unknown, token?: string): Promise<HttpResult<T>> {
  const bearer = token ?? (await readFile(svc.ctx.config.adminTokenFile, 'utf8')).trim();
  const res = await fetch(`${svc.apiUrl}${path}`, {
    method, headers: { authorization: `Bearer ${bearer}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
}

/** Creates a tenant, allows a pattern, makes a token and enrolls serverName; returns its identity. */
export async function enrolledAgent(svc: RunningService, tenant: string, pattern: string, serverName: string): Promise<TlsIdentity & { tenant: string; serverName: string; replicaKey: PublicJwk }> {
  const exists = await operator(svc, 'GET', '/v1/tenants');
  if (!(exists.body as { tenants: { name: string }[] }).tenants.some((t) => t.name === tenant)) await operator(svc, 'POST', '/v1/tenants', { name: tenant });
  await operator(svc, 'POST', `/v1/tenants/${tenant}/authorizations`, { pattern });
  const { body: tok } = await operator<{ token: string }>(svc, 'POST', `/v1/tenants/${tenant}/tokens`, {});
  const { keyPem, csrPem } = await newKeyAndCsr(serverName);
  const res = await httpsJson<{ certificate: string; tenantReplicaKey: PublicJwk }>(`${svc.agentUrl}/v1/enroll`, { method: 'POST', body: { token: tok.token, serverName, csr: csrPem }, caPem: svc.ctx.ca.certPem });
  if (res.status !== 200) throw new Error(`enroll ${serverName}: ${res.status} ${JSON.stringify(res.body)}`);
  return { keyPem, certPem: res.body.certificate, tenant, serverName, replicaKey: res.body.tenantReplicaKey };
}

/**
 * A Redis database of its own on the shared server, for anything that runs real service processes
 * with their default queue and lock names (the bench, tests with worker processes): an empty
 * database among 1–15, claimed with a marker key so a second claimant passes it by. drop() deletes
 * the keys of that database that the run made (every key, the database was empty) and the marker.
 */
export async function claimRedisDb(base = TestRedisUrl): Promise<{ url: string; db: number; drop(): Promise<void> }> {
  const { Redis } = await import('ioredis');
  const marker = `lifeboat-claim:${process.pid}:${randomBytes(4).toString('hex')}`;
  const dbs = Array.from({ length: 15 }, (_, i) => i + 1).sort(() => Math.random() - 0.5);
  for (const db of dbs) {
    const redis = new Redis(`${base}/${db}`, { maxRetriesPerRequest: 1, lazyConnect: true });
    try {
      await redis.connect();
      if ((await redis.dbsize()) !== 0) continue;
      if ((await redis.set('lifeboat-claim', marker, 'EX', 6 * 3600, 'NX')) !== 'OK') continue;
      if ((await redis.dbsize()) !== 1) {
        await redis.del('lifeboat-claim');
        continue;
      }
    } finally {
      redis.disconnect();
    }
    return {
      url: `${base}/${db}`, db,
      async drop() {
        const r = new Redis(`${base}/${db}`, { maxRetriesPerRequest: 1 });
        try {
          if ((await r.get('lifeboat-claim')) === marker) await r.flushdb();
        } finally {
          r.disconnect();
        }
      },
    };
  }
  throw new Error('no empty Redis database among 1–15 to claim');
}

/**
 * What the merge tests share: a service on a fresh catalog schema with VHDX replicas, a Redis
 * connection, and a Merger whose locks carry a prefix of this run's own. `close` undoes it all.
 */
export interface MergeHarness {
  env: TestEnv;
  svc: Awaited<ReturnType<typeof testService>>;
  redis: Redis;
  merger: Merger;
  lockPrefix: string;
  /** Tenant acme with servers *.acme.test allowed. */
  acme(): Promise<void>;
  /** acme's VM web01 disk0 at its latest point exported as raw (named name) and compared by qemu-img with source, a VHDX. */
  expectReplicaEquals(source: string, name: string): Promise<void>;
  close(): Promise<void>;
}

export async function mergeHarness(): Promise<MergeHarness> {
  const env = await testEnv((c) => {
    c.replicaFormat = 'vhdx';
  });
  let svc: MergeHarness['svc'];
  try {
    svc = await testService(env);
  } catch (err) {
    await env.cleanup();
    throw err;
  }
  const redis = new Redis(TestRedisUrl, { maxRetriesPerRequest: null });
  const lockPrefix = `lifeboat-test-${env.schema}`;
  return {
    env, svc, redis, lockPrefix, merger: new Merger(svc.ctx, redis, lockPrefix),
    async acme() {
      await operator(svc, 'POST', '/v1/tenants', { name: 'acme' });
      await operator(svc, 'POST', '/v1/tenants/acme/authorizations', { pattern: '*.acme.test' });
    },
    async expectReplicaEquals(source, name) {
      const out = join(env.dir, `${name}.raw`);
      const r = await operator(svc, 'POST', '/v1/tenants/acme/vms/web01/exports', { disk: 'disk0', format: 'raw', path: out });
      if (r.status !== 201) throw new Error(`export ${name}: ${r.status} ${JSON.stringify(r.body)}`);
      await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', source, out]);
    },
    async close() {
      redis.disconnect();
      await svc.stop();
      await env.cleanup();
    },
  };
}
