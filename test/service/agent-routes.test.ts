/**
 * The agent routes end to end over mutual TLS: registration, grants, uploads through the file-store
 * route, commits; and tenant scoping: another tenant's certificate on every route sees and writes
 * nothing of this tenant's.
 */
import { createHash } from 'node:crypto';
import { access, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestEnv, TlsIdentity } from './helpers.js';
import { enrolledAgent, httpsJson, operator, testEnv, testService } from './helpers.js';

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let caPem: string;
let alpha: TlsIdentity;
let beta: TlsIdentity;
const MiB = 1 << 20;

const registration = { disks: [{ id: 'disk0', virtualSize: 4 * MiB, format: 'vhdx' }], frequency: '30s', history: 2, appConsistentEvery: 0, compression: 'zstd' };
type Json = Record<string, unknown> & { error?: { code: string; reason?: string; message: string } };
const call = (id: TlsIdentity | undefined, method: string, path: string, body?: unknown) =>
  httpsJson<Json>(`${svc.agentUrl}${path}`, { method, caPem, identity: id, ...(body === undefined ? {} : { body }) });

async function upload(id: TlsIdentity, vm: string, disk: string, sequence: number, bytes: Buffer) {
  const g = await call(id, 'POST', `/v1/vms/${vm}/disks/${disk}/grants`, { kind: 'log', generation: 1, sequence });
  expect(g.status).toBe(200);
  const grant = g.body as { url: string; method: string; key: string };
  const put = await httpsJson(grant.url, { method: grant.method, rawBody: bytes, caPem });
  expect(put.status).toBe(200);
  return { key: grant.key, size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') };
}

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  caPem = svc.ctx.ca.certPem;
  alpha = await enrolledAgent(svc, 'alpha', 'hv*.alpha.example', 'hv1.alpha.example');
  beta = await enrolledAgent(svc, 'beta', '*', 'hv1.beta.example');
});
afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

describe('replication routes', () => {
  it('registers a VM and creates its replica under <storage>/<tenant>/<vm>/<disk>', async () => {
    const r = await call(alpha, 'PUT', '/v1/vms/web', registration);
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ vm: 'web', state: 'initial_required', frequency: '30s', history: 2 });
    expect((r.body.disks as unknown[])[0]).toMatchObject({ id: 'disk0', generation: 0, expect: { action: 'initial' } });
    const dir = join(env.config.replicaRoot, 'alpha', 'web', 'disk0');
    await access(join(dir, 'base.raw'));
    expect(JSON.parse(await readFile(join(dir, 'state.json'), 'utf8'))).toMatchObject({ generation: 0, appliedSequence: 0 });
    // Tenant data and its state are the service's user's alone.
    for (const f of ['base.raw', 'state.json']) expect((await stat(join(dir, f))).mode & 0o777, f).toBe(0o600);
    const again = await call(alpha, 'PUT', '/v1/vms/web', { ...registration, history: 4 });
    expect(again.status).toBe(200);
    expect(again.body.history).toBe(4);
  });

  it('grants an upload of exactly one key, records a commit once, refuses a different one', async () => {
    const obj = await upload(alpha, 'web', 'disk0', 1, Buffer.from('log one'));
    expect(obj.key).toBe('tenants/alpha/vms/web/disks/disk0/logs/0000000000000001/0000000000000001.hrl');
    const commit = { generation: 1, sequence: 1, ...obj, consistency: 'crash', createdAt: new Date().toISOString() };
    const first = await call(alpha, 'POST', '/v1/vms/web/disks/disk0/commits', commit);
    expect(first.status).toBe(202);
    expect(first.body.status).toBe('accepted');
    expect(svc.enqueued).toContainEqual({ tenant: 'alpha', vm: 'web', disk: 'disk0' });
    expect((await call(alpha, 'POST', '/v1/vms/web/disks/disk0/commits', commit)).body.status).toBe('duplicate');
    const differs = await call(alpha, 'POST', '/v1/vms/web/disks/disk0/commits', { ...commit, sha256: 'f'.repeat(64) });
    expect(differs.status).toBe(409);
    expect(differs.body.error?.reason).toBe('commit_differs');
    const missing = await call(alpha, 'POST', '/v1/vms/web/disks/disk0/commits', { ...commit, sequence: 2, key: obj.key.replace(/1\.hrl$/, '2.hrl') });
    expect(missing.status).toBe(422);
    expect(missing.body.error?.reason).toBe('object_missing');
    const wrongKey = await call(alpha, 'POST', '/v1/vms/web/disks/disk0/commits', { ...commit, key: 'tenants/beta/vms/web/disks/disk0/logs/0000000000000001/0000000000000001.hrl' });
    expect(wrongKey.status).toBe(400);
    const status = await call(alpha, 'GET', '/v1/vms/web');
    expect((status.body.disks as { pendingLogs: number }[])[0]!.pendingLogs).toBe(1);
    // A committed log is write-once: its grant, still valid, cannot overwrite it (409 already_committed, as JSON).
    const g = await call(alpha, 'POST', '/v1/vms/web/disks/disk0/grants', { kind: 'log', generation: 1, sequence: 1 });
    const grant = g.body as { url: string; method: string };
    const overwrite = await httpsJson<Json>(grant.url, { method: grant.method, rawBody: Buffer.from('tampered'), caPem });
    expect(overwrite.status).toBe(409);
    expect(overwrite.body.error).toMatchObject({ code: 'conflict', reason: 'already_committed' });
    expect(Buffer.concat(await (await svc.ctx.store.get(obj.key)).toArray() as Buffer[])).toEqual(Buffer.from('log one'));
  });

  it('refuses bad input with a 4xx and a message naming the field', async () => {
    const bad = await call(alpha, 'PUT', '/v1/vms/web', { ...registration, history: 25 });
    expect(bad.status).toBe(400);
    expect(bad.body.error?.message).toMatch(/history/);
    for (const vm of ['Web', 'a.b', 'a%2fb', '-a', 'x'.repeat(65)]) {
      expect((await call(alpha, 'PUT', `/v1/vms/${vm}`, registration)).status, vm).toBe(400);
    }
    // The client itself folds '..' away; whatever arrives must not reach a VM.
    for (const vm of ['..', '%2e%2e', '%2e']) expect((await call(alpha, 'PUT', `/v1/vms/${vm}`, registration)).status).toBe(404);
    expect((await call(alpha, 'PUT', '/v1/vms/web', { ...registration, disks: [{ id: 'disk0', virtualSize: MiB, format: 'vhdx' }] })).body.error?.reason).toBe('disk_shrunk');
    expect((await call(alpha, 'PUT', '/v1/vms/web', { ...registration, disks: [{ id: 'disk1', virtualSize: MiB, format: 'vhdx' }] })).body.error?.reason).toBe('disk_removed');
    expect((await call(alpha, 'POST', '/v1/vms/web/disks/disk0/grants', { kind: 'log', generation: 0, sequence: 1 })).status).toBe(400);
    expect((await call(alpha, 'GET', '/v1/vms/web/disks/disk0/digests?blockSize=1000')).status).toBe(400);
  });

  it('keeps a VM to its trust group', async () => {
    const dr = await enrolledAgent(svc, 'alpha', 'dr*.alpha.example', 'dr1.alpha.example');
    await operator(svc, 'POST', '/v1/tenants/alpha/authorizations', { pattern: 'dr*.alpha.example', trustGroup: 'other' });
    const r = await call(dr, 'GET', '/v1/vms/web');
    expect(r.status).toBe(403);
    expect(r.body.error?.reason).toBe('other_trust_group');
  });
});

describe('another tenant\'s certificate', () => {
  it('sees and writes nothing of the tenant on any route', async () => {
    const routes: [string, string, unknown?][] = [
      ['GET', '/v1/vms/web'],
      ['DELETE', '/v1/vms/web'],
      ['POST', '/v1/vms/web/disks/disk0/grants', { kind: 'log', generation: 1, sequence: 2 }],
      ['POST', '/v1/vms/web/disks/disk0/grants', { kind: 'manifest', generation: 1 }],
      ['POST', '/v1/vms/web/disks/disk0/commits', { generation: 1, sequence: 1, key: 'tenants/alpha/vms/web/disks/disk0/logs/0000000000000001/0000000000000001.hrl', size: 7, sha256: '0'.repeat(64), consistency: 'crash', createdAt: new Date().toISOString() }],
      ['POST', '/v1/vms/web/disks/disk0/chunks', { generation: 1, index: 0, key: 'tenants/alpha/vms/web/disks/disk0/initial/0000000000000001/0000000000000000.chunk', size: 1, sha256: '0'.repeat(64), createdAt: new Date().toISOString() }],
      ['POST', '/v1/vms/web/disks/disk0/initial', { generation: 1, mode: 'full', chunkCount: 0, consistency: 'crash', createdAt: new Date().toISOString() }],
      ['GET', '/v1/vms/web/disks/disk0/digests?blockSize=65536'],
    ];
    for (const [method, path, body] of routes) {
      const r = await call(beta, method, path, body);
      expect(r.status, `${method} ${path}`).toBe(404);
      expect(JSON.stringify(r.body)).not.toMatch(/alpha/);
    }
    const list = await call(beta, 'GET', '/v1/vms');
    expect(list.body).toEqual({ vms: [] });

    // beta's own "web" is its own VM, under its own prefix and directory; alpha's is untouched.
    expect((await call(beta, 'PUT', '/v1/vms/web', registration)).status).toBe(201);
    const g = await call(beta, 'POST', '/v1/vms/web/disks/disk0/grants', { kind: 'log', generation: 1, sequence: 1 });
    expect(g.body.key).toMatch(/^tenants\/beta\//);
    const commit = await call(beta, 'POST', '/v1/vms/web/disks/disk0/commits', { generation: 1, sequence: 1, key: 'tenants/alpha/vms/web/disks/disk0/logs/0000000000000001/0000000000000001.hrl', size: 7, sha256: '0'.repeat(64), consistency: 'crash', createdAt: new Date().toISOString() });
    expect(commit.status).toBe(400);
    await access(join(env.config.replicaRoot, 'beta', 'web', 'disk0', 'state.json'));
    const a = await call(alpha, 'GET', '/v1/vms/web');
    expect(a.body).toMatchObject({ vm: 'web', tenant: 'alpha', history: 4 });
    expect((a.body.disks as { pendingLogs: number }[])[0]!.pendingLogs).toBe(1);
  });

  it('cannot use a file-store grant for another key', async () => {
    const g = await call(beta, 'POST', '/v1/vms/web/disks/disk0/grants', { kind: 'log', generation: 1, sequence: 2 });
    const url = String(g.body.url).replace('tenants%2Fbeta', 'tenants%2Falpha');
    expect(url).toContain('alpha');
    const put = await httpsJson<Json>(url, { method: 'PUT', rawBody: 'evil', caPem });
    expect(put.status).toBe(403);
    // The upload route answers errors as every agent route does (agent protocol §11), not in plain text.
    expect(put.body.error).toMatchObject({ code: 'forbidden', message: 'object grant refused: bad signature' });
  });
});
