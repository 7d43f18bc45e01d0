/**
 * Initial replication on external media, end to end with the real service (PostgreSQL catalog, file
 * store, merge by Merger.merge()): an agent protects a VHDX made by qemu-img and written by qemu-io
 * with --initial media:DIR, writes the base to DIR, the disk changes meanwhile, the hoster runs
 * `lifeboat-service import-media`, the agent's next run ships the changes as logs, and the exported
 * latest point equals the source (`qemu-img compare`). Plus: another tenant's import is refused, a
 * damaged or missing chunk stops the import of its disk with one line naming it, re-import is a
 * duplicate.
 */
import { cp, mkdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enroll } from '../../agent/enroll/enroll.js';
import { silentLogger } from '../../agent/replicate/context.js';
import type { VmCycleResult } from '../../agent/replicate/engine.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { engineContext } from '../../agent/replicate/from-state.js';
import { AgentState } from '../../agent/state/store.js';
import type { RunningService } from '../../service/runner.js';
import { startService } from '../../service/runner.js';
import { Merger } from '../../service/workers/merger.js';
import { referee, runBin, TestRedisUrl } from '../helpers.js';
import type { CommandOutput } from '../helpers.js';
import type { TestEnv } from '../service/helpers.js';
import { freePort, operator, testEnv } from '../service/helpers.js';

let env: TestEnv;
let svc: RunningService;
let redis: Redis;
let merger: Merger;
let state: AgentState;
let disk: string;
let media: string;
const enqueued: string[] = [];

function cli(args: string[]): Promise<CommandOutput> {
  return runBin('service', [...args, '--config', env.config.path]);
}

async function runOnce(): Promise<VmCycleResult> {
  const [r] = await new Replicator({ ...(await engineContext(state, silentLogger)), retry: { attempts: 1 } }).runOnce();
  expect(r, r?.error).toMatchObject({ outcome: 'ok' });
  return r!;
}

const baseDir = (root: string) => join(root, 'lifeboat-media', 'acme', 'web01', 'disk0', '0000000000000001');

beforeAll(async () => {
  const apiPort = await freePort();
  env = await testEnv((c) => {
    c.replicaFormat = 'vhdx';
    c.api = { ...(c.api as object), port: apiPort };
  });
  svc = await startService(env.config, { workers: false, log: pino({ level: 'silent' }), enqueue: async (ref) => { enqueued.push(`${ref.tenant}/${ref.vm}/${ref.disk}`); } });
  redis = new Redis(TestRedisUrl, { maxRetriesPerRequest: null });
  merger = new Merger(svc.ctx, redis, `lifeboat-test-${env.schema}`);
  for (const t of ['acme', 'other']) {
    await operator(svc, 'POST', '/v1/tenants', { name: t });
    await operator(svc, 'POST', `/v1/tenants/${t}/authorizations`, { pattern: `*.${t}.test` });
  }
  const token = (await operator<{ token: string }>(svc, 'POST', '/v1/tenants/acme/tokens', {})).body.token;
  state = new AgentState(join(env.dir, 'agent'));
  await enroll(state, { serviceUrl: svc.agentUrl, token, serverName: 'hv01.acme.test' });
  disk = join(env.dir, 'web01.vhdx');
  media = join(env.dir, 'usb');
  await mkdir(media);
  await referee('qemu-img', ['create', '-q', '-f', 'vhdx', disk, '40M']);
  await referee('qemu-io', ['-c', 'write -P 0x5a 1M 3M', '-c', 'write -P 0x21 20M 2M', disk]);
  await state.writeConfig({
    version: 1, name: 'web01', disks: [{ id: 'disk0', path: disk }], frequencyMs: 30_000, history: 0, appConsistentEveryMs: null, preSnapshot: null,
    postSnapshot: null, compression: 'zstd', initial: { mode: 'media', dir: media }, startAt: null, bandwidthBytesPerSec: null, paused: false, createdAt: new Date().toISOString(),
  });
});
afterAll(async () => {
  redis?.disconnect();
  await svc?.stop();
  await env?.cleanup();
});

describe('import-media', () => {
  it('loads the base from media; the agent then ships the changes made meanwhile; the replica equals the source', async () => {
    await runOnce();
    const manifest = JSON.parse(await readFile(join(baseDir(media), 'manifest.json'), 'utf8')) as { complete: boolean; chunkCount: number };
    expect(manifest).toMatchObject({ complete: true });
    // Nothing went over the network: the service holds no chunk and no base yet.
    expect((await operator<{ vms: { disks: { baseComplete: boolean; generation: number }[] }[] }>(svc, 'GET', '/v1/vms?tenant=acme')).body.vms[0]!.disks[0]).toMatchObject({ baseComplete: false, generation: 0 });

    await referee('qemu-io', ['-c', 'write -P 0x77 5M 192k', '-c', 'write -z 20M 64k', '-c', 'write -P 0x33 39M 1M', disk]);
    expect((await runOnce()).stats).toMatchObject({ logs: 0, sentBytes: 0 }); // base not imported yet: changes stay tracked

    // A copy whose chunk is damaged, and one whose chunk is missing: refused, nothing recorded.
    const damaged = join(env.dir, 'usb-damaged');
    await cp(media, damaged, { recursive: true });
    // Chunks 0 and 1: the 8 MiB slots holding data (1 to 4 MiB, 20 to 22 MiB); the holes are none.
    expect(manifest.chunkCount).toBe(2);
    const chunk1 = join(baseDir(damaged), '0000000000000001.chunk');
    const bytes = await readFile(chunk1);
    const mid = bytes.length >> 1;
    bytes[mid] = bytes[mid]! ^ 0x40;
    await writeFile(chunk1, bytes);
    const bad = await cli(['import-media', '--tenant', 'acme', '--dir', damaged]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^lifeboat-service: chunk 1 \(.*0000000000000001\.chunk\) is damaged: its SHA-256 differs from the manifest\n$/);
    await truncate(join(baseDir(damaged), '0000000000000000.chunk'), 100);
    expect((await cli(['import-media', '--tenant', 'acme', '--dir', damaged])).stderr).toMatch(/chunk 0 \(.*\) is damaged: 100 bytes, the manifest says \d+\n$/);
    const missing = join(env.dir, 'usb-missing');
    await cp(media, missing, { recursive: true });
    await rm(join(baseDir(missing), '0000000000000001.chunk'));
    const gone = await cli(['import-media', '--tenant', 'acme', '--dir', missing]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/^lifeboat-service: chunk 1 \(.*0000000000000001\.chunk\) is missing\n$/);
    expect(await svc.ctx.db.query('SELECT 1 FROM logs WHERE tenant = $1', ['acme'])).toHaveLength(0);
    expect(await svc.ctx.db.query('SELECT 1 FROM bases WHERE tenant = $1', ['acme'])).toHaveLength(0);

    const ok = await cli(['import-media', '--tenant', 'acme', '--dir', media, '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ tenant: 'acme', disks: [{ vm: 'web01', disk: 'disk0', generation: 1, mode: 'full', status: 'accepted', chunks: manifest.chunkCount, stored: manifest.chunkCount }] });
    expect(enqueued).toContain('acme/web01/disk0');
    await merger.merge();

    const after = await runOnce(); // sees the base applied, ships the changes made meanwhile as a log
    expect(after.stats).toMatchObject({ logs: 1, changedBytes: (192 << 10) + (64 << 10) + (1 << 20) });
    expect((await state.readProgress('web01')).disks.disk0).toMatchObject({ generation: 1, nextSequence: 2, inflight: [] });
    await merger.merge();
    const out = join(env.dir, 'export.raw');
    const r = await operator(svc, 'POST', '/v1/tenants/acme/vms/web01/exports', { disk: 'disk0', point: 'latest', format: 'raw', path: out });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', disk, out]);

    // Again: a duplicate, nothing stored twice.
    const again = await cli(['import-media', '--tenant', 'acme', '--dir', media]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toBe('acme/web01/disk0 generation 1 (full): already imported; the merge applies it\n');
  });

  it('refuses media of another tenant, on the command line and on the API route', async () => {
    const wrong = await cli(['import-media', '--tenant', 'other', '--dir', media]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toBe(`lifeboat-service: media in ${media} belongs to tenant acme, not other\n`);
    // The route is tenant-scoped: another tenant's route finds no media of its own in DIR, and a
    // manifest of acme's placed under other's directory is refused by its tenant field.
    const body = { dir: media, vm: 'web01', disk: 'disk0', generation: 1 };
    const moved = join(env.dir, 'usb-moved');
    await mkdir(join(moved, 'lifeboat-media', 'other', 'web01', 'disk0'), { recursive: true });
    await cp(baseDir(media), join(moved, 'lifeboat-media', 'other', 'web01', 'disk0', '0000000000000001'), { recursive: true });
    const t2 = (await operator<{ token: string }>(svc, 'POST', '/v1/tenants/other/tokens', {})).body.token;
    const otherState = new AgentState(join(env.dir, 'agent-other'));
    await enroll(otherState, { serviceUrl: svc.agentUrl, token: t2, serverName: 'hv09.other.test' });
    await otherState.writeConfig({ ...(await state.readConfig('web01')), initial: { mode: 'media', dir: join(env.dir, 'usb-other') } });
    await mkdir(join(env.dir, 'usb-other'));
    const [reg] = await new Replicator({ ...(await engineContext(otherState, silentLogger)), retry: { attempts: 1 } }).runOnce();
    expect(reg, reg?.error).toMatchObject({ outcome: 'ok' });
    const none = await operator<{ detail: string }>(svc, 'POST', '/v1/tenants/other/media-imports', body);
    expect(none.status).toBe(404);
    expect(none.body.detail).toMatch(/no media manifest/);
    const refused = await operator<{ detail: string }>(svc, 'POST', '/v1/tenants/other/media-imports', { ...body, dir: moved });
    expect(refused.status).toBe(409);
    expect(refused.body.detail).toMatch(/belongs to tenant acme, not other/);
    expect(await svc.ctx.db.query('SELECT 1 FROM logs WHERE tenant = $1', ['other'])).toHaveLength(0);
  });

  it('has --help', async () => {
    const h = await cli(['import-media', '--help']);
    expect(h.code).toBe(0);
    expect(h.stdout).toContain('--tenant <name>');
    expect(h.stdout).toContain('--json');
  });
});
