/**
 * The agent's uploads through the grants of every object store the service can use: the service on
 * s3rver (presigned S3 PUTs) and on Azurite (SAS URLs), started by this file. The base and a cycle
 * are committed, which the service accepts only when each object is in the store with its size.
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { enroll } from '../../agent/enroll/enroll.js';
import { silentLogger } from '../../agent/replicate/context.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { DefaultChunkSize } from '../../agent/replicate/initial.js';
import { engineContext } from '../../agent/replicate/from-state.js';
import { AgentState } from '../../agent/state/store.js';
import { openObjectStore } from '../../shared/objectstore/index.js';
import { referee } from '../helpers.js';
import type { Emulator } from '../objectstore/emulators.js';
import { startAzurite, startS3rver } from '../objectstore/emulators.js';
import { operator, testEnv, testService } from '../service/helpers.js';

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe.each([
  ['s3rver', startS3rver],
  ['azurite', startAzurite],
] as const)('agent through the service on %s', (name, start) => {
  it('ships a base and a cycle through the store\'s own upload URLs', async () => {
    const emulator: Emulator = await start(`agent-${name}`);
    cleanups.push(emulator.stop);
    const saved = { ...process.env };
    // The service in this process reads the store's credentials from the environment.
    for (const [k, v] of Object.entries(emulator.env)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    cleanups.push(async () => { process.env = saved; });
    const env = await testEnv((c) => { c.objectStore = { url: emulator.url }; });
    cleanups.push(env.cleanup);
    const svc = await testService(env);
    cleanups.push(svc.stop);
    await operator(svc, 'POST', '/v1/tenants', { name: 'acme' });
    await operator(svc, 'POST', '/v1/tenants/acme/authorizations', { pattern: '*.acme.test' });
    const token = (await operator<{ token: string }>(svc, 'POST', '/v1/tenants/acme/tokens', {})).body.token;

    const state = new AgentState(join(env.dir, 'agent'));
    await enroll(state, { serviceUrl: svc.agentUrl, token, serverName: 'hv01.acme.test' });
    const disk = join(env.dir, 'web01.vhdx');
    await referee('qemu-img', ['create', '-q', '-f', 'vhdx', disk, '40M']);
    await referee('qemu-io', ['-c', 'write -P 0x5a 1M 2M', disk]);
    await state.writeConfig({
      version: 1, name: 'web01', disks: [{ id: 'disk0', path: disk }], frequencyMs: 30_000, history: 0, appConsistentEveryMs: null, preSnapshot: null,
      postSnapshot: null, compression: 'lz4', initial: { mode: 'network' }, startAt: null, bandwidthBytesPerSec: null, paused: false, createdAt: new Date().toISOString(),
    });
    const replicator = new Replicator({ ...(await engineContext(state, silentLogger)), retry: { attempts: 1 } });
    const [first] = await replicator.runOnce();
    expect(first, first?.error).toMatchObject({ outcome: 'ok' });
    await referee('qemu-io', ['-c', 'write -P 0x33 9M 64k', disk]);
    const [second] = await replicator.runOnce();
    expect(second!.stats!.changedBytes).toBe(64 << 10);

    const store = await openObjectStore(emulator.url, { env: emulator.env });
    const keys: string[] = [];
    for await (const e of store.list('tenants/acme/vms/web01/disks/disk0/')) keys.push(e.key);
    await store.close();
    expect(keys.filter((k) => k.endsWith('.chunk'))).toHaveLength(Math.ceil((40 << 20) / DefaultChunkSize));
    expect(keys.filter((k) => k.endsWith('.hrl'))).toHaveLength(2);
  });
});
