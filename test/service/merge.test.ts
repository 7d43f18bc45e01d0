/**
 * Merging committed logs into replicas, driven through the agent protocol and Merger.merge() (no
 * timers): an initial full base, logs committed out of order applied in order, duplicates ignored,
 * a crash between applying and the catalog recovered from state.json, and tampered or replayed logs
 * refused with nothing applied. The test keeps a reference copy of each disk to compare against.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDisk } from '../../shared/disk/index.js';
import type { Extent } from '../../shared/disk/types.js';
import type { PublicJwk } from '../../shared/crypto/keys.js';
import { writeLog } from '../../shared/log/index.js';
import type { LogKind } from '../../shared/log/index.js';
import { collect, memorySource } from '../../shared/log/testing.js';
import { Merger } from '../../service/workers/merger.js';
import type { TestEnv, TlsIdentity } from './helpers.js';
import { enrolledAgent, httpsJson, testEnv, testService } from './helpers.js';
import { referee } from '../helpers.js';

const MiB = 1 << 20;
const Size = 4 * MiB;
let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let agent: TlsIdentity & { replicaKey: PublicJwk };
let redis: Redis;
let merger: Merger;
let caPem: string;

type Json = Record<string, unknown> & { error?: { reason?: string; message: string } };
const call = (method: string, path: string, body?: unknown) => httpsJson<Json>(`${svc.agentUrl}${path}`, { method, caPem, identity: agent, ...(body === undefined ? {} : { body }) });

/** A sealed log over `disk` (the agent's view) holding the given extents. */
async function sealed(diskId: string, generation: number, sequence: number, disk: Buffer, extents: Extent[], kind: LogKind = 'incremental'): Promise<Buffer> {
  const { sealed: bytes } = writeLog({ tenant: 'acme', vm: 'db', disk: diskId, generation, sequence, virtualSize: Size, kind }, memorySource(disk, extents), { recipient: agent.replicaKey });
  return collect(bytes);
}

async function put(diskId: string, grant: Record<string, unknown>, bytes: Buffer) {
  const g = await call('POST', `/v1/vms/db/disks/${diskId}/grants`, grant);
  expect(g.status).toBe(200);
  const up = await httpsJson(String(g.body.url), { method: 'PUT', rawBody: bytes, caPem });
  expect(up.status).toBe(200);
  return { key: String(g.body.key), size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'), createdAt: new Date().toISOString() };
}

async function commitLog(diskId: string, sequence: number, bytes: Buffer) {
  const obj = await put(diskId, { kind: 'log', generation: 1, sequence }, bytes);
  const r = await call('POST', `/v1/vms/db/disks/${diskId}/commits`, { generation: 1, sequence, ...obj, consistency: 'crash' });
  expect(r.status).toBe(202);
  return { ...obj, status: r.body.status };
}

async function replica(diskId: string): Promise<Buffer> {
  const dir = join(env.config.replicaRoot, 'acme', 'db', diskId);
  const state = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as { layers: string[] };
  const img = await openDisk(join(dir, state.layers.at(-1)!), { readOnly: true });
  try {
    const buf = Buffer.alloc(img.virtualSize);
    await img.read(0, buf);
    return buf;
  } finally {
    await img.close();
  }
}

const diskState = async (diskId: string) => ((await call('GET', '/v1/vms/db')).body.disks as Record<string, unknown>[]).find((d) => d.id === diskId)!;

/** Random data written into the agent's disk and the list of extents that say so. */
function scribble(disk: Buffer, ranges: [number, number][]): Extent[] {
  return ranges.map(([offset, length]) => {
    randomBytes(length).copy(disk, offset);
    return { offset, length, kind: 'data' as const };
  });
}

beforeAll(async () => {
  env = await testEnv((c) => {
    c.replicaFormat = 'vhdx';
  });
  svc = await testService(env);
  caPem = svc.ctx.ca.certPem;
  agent = await enrolledAgent(svc, 'acme', '*.acme.example', 'hv1.acme.example');
  redis = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: null });
  merger = new Merger(svc.ctx, redis, `lifeboat-test-${env.schema}`);
  const reg = await call('PUT', '/v1/vms/db', { disks: [{ id: 'disk0', virtualSize: Size, format: 'raw' }, { id: 'disk1', virtualSize: Size, format: 'raw' }], frequency: '30s', history: 0, appConsistentEvery: 0, compression: 'zstd' });
  expect(reg.status).toBe(201);
});
afterAll(async () => {
  redis?.disconnect();
  await svc?.stop();
  await env?.cleanup();
});

describe('merge', () => {
  const source = Buffer.alloc(Size); // the agent's disk0 as it evolves
  const reference: Buffer[] = []; // source after each applied sequence

  it('applies an initial full copy made of chunks as generation 1', async () => {
    const c0 = scribble(source, [[0, MiB]]);
    const c1 = scribble(source, [[2 * MiB, 512 * 1024]]);
    for (const [index, ext] of [c0, c1].entries()) {
      const obj = await put('disk0', { kind: 'chunk', generation: 1, index }, await sealed('disk0', 1, index, source, ext, 'full'));
      expect((await call('POST', '/v1/vms/db/disks/disk0/chunks', { generation: 1, index, ...obj })).status).toBe(202);
    }
    const early = await call('POST', '/v1/vms/db/disks/disk0/initial', { generation: 1, mode: 'full', chunkCount: 3, consistency: 'crash', createdAt: new Date().toISOString() });
    expect(early.body.error?.reason).toBe('chunks_missing');
    const done = await call('POST', '/v1/vms/db/disks/disk0/initial', { generation: 1, mode: 'full', chunkCount: 2, consistency: 'crash', createdAt: new Date().toISOString() });
    expect(done.status).toBe(202);
    await merger.merge();
    expect(await diskState('disk0')).toMatchObject({ generation: 1, baseComplete: true, appliedSequence: 0, state: 'replicating' });
    expect((await replica('disk0')).equals(source)).toBe(true);
    reference[0] = Buffer.from(source);
  });

  it('applies logs committed out of order strictly in order; a gap waits', async () => {
    const logs: Buffer[] = [];
    for (let seq = 1; seq <= 3; seq++) {
      // Overlapping writes, so applying in the wrong order gives different bytes.
      const ext = scribble(source, [[MiB / 2, MiB], [3 * MiB + seq * 4096, 4096]]);
      logs[seq] = await sealed('disk0', 1, seq, source, ext);
      reference[seq] = Buffer.from(source);
    }
    await commitLog('disk0', 3, logs[3]!);
    await commitLog('disk0', 1, logs[1]!);
    await merger.merge();
    expect(await diskState('disk0')).toMatchObject({ appliedSequence: 1, pendingLogs: 1 });
    expect((await replica('disk0')).equals(reference[1]!)).toBe(true);
    await commitLog('disk0', 2, logs[2]!);
    await merger.merge();
    expect(await diskState('disk0')).toMatchObject({ appliedSequence: 3, pendingLogs: 0, state: 'replicating' });
    expect((await replica('disk0')).equals(reference[3]!)).toBe(true);
    // qemu-img, the independent referee, reads the VHDX replica as the same bytes.
    const dir = join(env.config.replicaRoot, 'acme', 'db', 'disk0');
    const state = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as { layers: string[] };
    await writeFile(join(env.dir, 'reference.raw'), reference[3]!);
    await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', join(dir, state.layers.at(-1)!), join(env.dir, 'reference.raw')]);
  });

  it('ignores duplicates, including a log the catalog lost track of after a crash', async () => {
    const dup = await call('POST', '/v1/vms/db/disks/disk0/commits', { generation: 1, sequence: 3, ...(await latestCommit(3)), consistency: 'crash' });
    expect(dup.body.status).toBe('duplicate');
    // As if the worker died after writing state.json but before updating the catalog.
    await svc.ctx.db.query(`UPDATE logs SET status = 'pending' WHERE tenant = 'acme' AND vm = 'db' AND disk = 'disk0' AND sequence IN (2, 3)`);
    await svc.ctx.db.query(`UPDATE disks SET applied_sequence = 1 WHERE tenant = 'acme' AND vm = 'db' AND id = 'disk0'`);
    await merger.merge();
    const rows = await svc.ctx.db.query<{ sequence: number; status: string }>(`SELECT sequence, status FROM logs WHERE disk = 'disk0' AND kind = 'log' ORDER BY sequence`);
    expect(rows).toEqual([{ sequence: 1, status: 'applied' }, { sequence: 2, status: 'skipped' }, { sequence: 3, status: 'skipped' }]);
    expect(await diskState('disk0')).toMatchObject({ appliedSequence: 3 });
    expect((await replica('disk0')).equals(reference[3]!)).toBe(true);
  });

  it('refuses a tampered log: resynchronization required, nothing of it applied, later logs wait', async () => {
    const before = Buffer.from(source);
    const ext = scribble(source, [[0, 2 * MiB]]);
    const bytes = await sealed('disk0', 1, 4, source, ext);
    const obj = await commitLog('disk0', 4, bytes);
    const flipped = Buffer.from(bytes);
    flipped[Math.floor(flipped.length * 0.75)]! ^= 0x40; // deep in the log: earlier frames verify
    await svc.ctx.store.put(obj.key, flipped);
    await commitLog('disk0', 5, await sealed('disk0', 1, 5, source, scribble(source, [[0, 4096]])));
    await merger.merge();
    const d = await diskState('disk0');
    expect(d).toMatchObject({ state: 'resync_required', appliedSequence: 3, expect: { action: 'resync' } });
    expect(String(d.resyncReason)).toMatch(/log 1\/4/);
    expect((await replica('disk0')).equals(before)).toBe(true);
    const vm = await call('GET', '/v1/vms/db');
    expect(vm.body.health).toBe('critical');
    const rows = await svc.ctx.db.query<{ sequence: number; status: string }>(`SELECT sequence, status FROM logs WHERE disk = 'disk0' AND kind = 'log' AND sequence > 3 ORDER BY sequence`);
    expect(rows).toEqual([{ sequence: 4, status: 'rejected' }, { sequence: 5, status: 'pending' }]);
  });

  it('refuses a log replayed under another sequence', async () => {
    const src1 = Buffer.alloc(Size);
    const obj = await put('disk1', { kind: 'chunk', generation: 1, index: 0 }, await sealed('disk1', 1, 0, src1, scribble(src1, [[0, 65536]]), 'full'));
    await call('POST', '/v1/vms/db/disks/disk1/chunks', { generation: 1, index: 0, ...obj });
    await call('POST', '/v1/vms/db/disks/disk1/initial', { generation: 1, mode: 'full', chunkCount: 1, consistency: 'crash', createdAt: new Date().toISOString() });
    await merger.merge();
    const base = await replica('disk1');
    expect(base.equals(src1)).toBe(true);
    const log2 = await sealed('disk1', 1, 2, src1, scribble(src1, [[MiB, 65536]]));
    await commitLog('disk1', 1, log2); // sealed as sequence 2, committed as 1
    await merger.merge();
    const d = await diskState('disk1');
    expect(d.state).toBe('resync_required');
    expect(String(d.resyncReason)).toMatch(/sequence/);
    expect((await replica('disk1')).equals(base)).toBe(true);
  });
});

async function latestCommit(sequence: number) {
  const row = (await svc.ctx.db.query<{ key: string; size: number; sha256: string; createdAt: Date }>(
    `SELECT key, size, sha256, created_at AS "createdAt" FROM logs WHERE disk = 'disk0' AND kind = 'log' AND sequence = $1`, [sequence]))[0]!;
  return { key: row.key, size: row.size, sha256: row.sha256, createdAt: row.createdAt.toISOString() };
}
