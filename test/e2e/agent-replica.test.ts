/**
 * The whole path with the real service and its merge worker: an agent enrolled by its own code
 * replicates a VHDX made by qemu-img and written by qemu-io; the service merges (Merger.merge(), no
 * timers) and exports the latest point, which `qemu-img compare` must find equal to the source.
 * Then `lifeboat-agent run --once` is killed (SIGKILL) in the middle of a base, of a cycle's scan
 * and of an upload, each time the disk having changed; a later run loses nothing.
 */
import { spawn } from 'node:child_process';
import { watch } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enroll } from '../../agent/enroll/enroll.js';
import { silentLogger } from '../../agent/replicate/context.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { engineContext } from '../../agent/replicate/from-state.js';
import { AgentState } from '../../agent/state/store.js';
import { Merger } from '../../service/workers/merger.js';
import { referee } from '../helpers.js';
import type { TestEnv } from '../service/helpers.js';
import { operator, testEnv, testService } from '../service/helpers.js';

const agentBin = resolve(import.meta.dirname, '../../bin/lifeboat-agent.js');
let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let redis: Redis;
let merger: Merger;
let state: AgentState;
let disk: string;

beforeAll(async () => {
  env = await testEnv((c) => { c.replicaFormat = 'vhdx'; });
  svc = await testService(env);
  redis = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: null });
  merger = new Merger(svc.ctx, redis, `lifeboat-test-${env.schema}`);
  await operator(svc, 'POST', '/v1/tenants', { name: 'acme' });
  await operator(svc, 'POST', '/v1/tenants/acme/authorizations', { pattern: '*.acme.test' });
  const token = (await operator<{ token: string }>(svc, 'POST', '/v1/tenants/acme/tokens', {})).body.token;
  state = new AgentState(join(env.dir, 'agent'));
  await enroll(state, { serviceUrl: svc.agentUrl, token, serverName: 'hv01.acme.test' });
  disk = join(env.dir, 'web01.vhdx');
  await referee('qemu-img', ['create', '-q', '-f', 'vhdx', disk, '96M']);
  await referee('qemu-io', ['-c', 'write -P 0x5a 1M 3M', '-c', 'write -P 0x21 50M 2M', disk]);
  await state.writeConfig({
    version: 1, name: 'web01', disks: [{ id: 'disk0', path: disk }], frequencyMs: 30_000, history: 0, appConsistentEveryMs: null, preSnapshot: null,
    postSnapshot: null, compression: 'zstd', initial: { mode: 'network' }, startAt: null, bandwidthBytesPerSec: null, paused: false, createdAt: new Date().toISOString(),
  });
});
afterAll(async () => {
  redis?.disconnect();
  await svc?.stop();
  await env?.cleanup();
});

/** Merges what was committed, exports the latest point and compares it with the source. */
async function expectReplicaEqualsSource(id = 'disk0', source = disk): Promise<void> {
  await merger.merge();
  const out = join(env.dir, `export-${id}-${Date.now()}.raw`);
  const r = await operator(svc, 'POST', '/v1/tenants/acme/vms/web01/exports', { disk: id, point: 'latest', format: 'raw', path: out });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', source, out]);
}

async function runOnce(): Promise<void> {
  const [r] = await new Replicator({ ...(await engineContext(state, silentLogger)), retry: { attempts: 1 } }).runOnce();
  expect(r, r?.error).toMatchObject({ outcome: 'ok' });
}

/** Runs `lifeboat-agent run --once` and kills it with SIGKILL at the nth change of a file whose name matches in dir. */
async function killWhen(dir: string, pattern: RegExp, nth = 1): Promise<boolean> {
  await mkdir(dir, { recursive: true });
  const child = spawn(process.execPath, [agentBin, 'run', '--once', '--state-dir', state.dir], { stdio: 'ignore' });
  let killed = false;
  let seen = 0;
  const watcher = watch(dir, (_event, name) => {
    if (!killed && name && pattern.test(name) && ++seen >= nth) {
      killed = true;
      child.kill('SIGKILL');
    }
  });
  await new Promise<void>((r) => child.on('exit', () => r()));
  watcher.close();
  return killed;
}

describe('agent, service and merge worker', () => {
  it('replicates a VHDX: the exported latest point equals the source, after the base and after a cycle', async () => {
    await runOnce();
    await expectReplicaEqualsSource();
    await referee('qemu-io', ['-c', 'write -P 0x77 10M 192k', '-c', 'write -z 50M 64k', disk]);
    await runOnce();
    await expectReplicaEqualsSource();
  });

  it('loses nothing when the agent is killed mid-scan or mid-upload', async () => {
    const vmDir = state.vmDir('web01');
    const kills: boolean[] = [];
    await referee('qemu-io', ['-c', 'write -P 0x31 20M 1M', disk]);
    kills.push(await killWhen(vmDir, /\.map\.pending\.tmp$/)); // during the cycle's scan
    await referee('qemu-io', ['-c', 'write -P 0x32 30M 64k', disk]);
    kills.push(await killWhen(join(vmDir, 'spool'), /\.hrl$/)); // the log sealed, before or during its upload
    await referee('qemu-io', ['-c', 'write -P 0x33 70M 2M', disk]);
    kills.push(await killWhen(vmDir, /^progress\.json$/)); // at its first progress write (the log in flight)
    expect(kills.some((k) => k)).toBe(true);
    await runOnce();
    await expectReplicaEqualsSource();
  });

  it('loses nothing when the agent is killed in the middle of a new disk\'s base', async () => {
    const disk1 = join(env.dir, 'web01-data.vhdx');
    await referee('qemu-img', ['create', '-q', '-f', 'vhdx', disk1, '80M']);
    await referee('qemu-io', ['-c', 'write -P 0x44 0 8M', '-c', 'write -P 0x45 40M 24M', disk1]);
    const config = await state.readConfig('web01');
    await state.writeConfig({ ...config, disks: [...config.disks, { id: 'disk1', path: disk1 }] });
    // Progress writes: registration, start of the base, then two per chunk: stop after a few chunks.
    expect(await killWhen(state.vmDir('web01'), /^progress\.json$/, 6)).toBe(true);
    const p = await state.readProgress('web01');
    expect(p.disks.disk1!.initial.state).toBe('running');
    await referee('qemu-io', ['-c', 'write -P 0x46 2M 64k', disk1]);
    await runOnce();
    await expectReplicaEqualsSource('disk1', disk1);
    await expectReplicaEqualsSource();
  });
});
