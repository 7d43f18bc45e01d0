/**
 * The whole data path with the real agent: lifeboat-agent's own enrollment and replication engine
 * protect a VHDX written by qemu-io; the service's merge workers apply its initial copy and cycles;
 * the replica, exported as a flat image, equals the source disk by qemu-img's judgement.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enroll } from '../../agent/enroll/enroll.js';
import { silentLogger } from '../../agent/replicate/context.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { engineContext } from '../../agent/replicate/from-state.js';
import { AgentState } from '../../agent/state/store.js';
import type { Merger } from '../../service/workers/merger.js';
import { referee } from '../helpers.js';
import type { MergeHarness, TestEnv } from './helpers.js';
import { mergeHarness, operator } from './helpers.js';

let h: MergeHarness | undefined;
let env: TestEnv;
let svc: MergeHarness['svc'];
let merger: Merger;

beforeAll(async () => {
  h = await mergeHarness();
  ({ env, svc, merger } = h);
  await h.acme();
});
afterAll(async () => {
  await h?.close();
});

describe('agent → service → replica', () => {
  it('merges the real agent\'s initial copy and cycles into a replica equal to the source', async () => {
    const state = new AgentState(join(env.dir, 'agent'));
    const { token } = (await operator<{ token: string }>(svc, 'POST', '/v1/tenants/acme/tokens', {})).body;
    await enroll(state, { serviceUrl: svc.agentUrl, token, serverName: 'hv01.acme.test' });
    const source = join(env.dir, 'web01.vhdx');
    await referee('qemu-img', ['create', '-q', '-f', 'vhdx', source, '48M']);
    await referee('qemu-io', ['-c', 'write -P 0x5a 1M 2M', '-c', 'write -P 0x11 33M 64k', source]);
    await state.writeConfig({
      version: 1, name: 'web01', disks: [{ id: 'disk0', path: source }], frequencyMs: 30_000, history: 0, appConsistentEveryMs: null, preSnapshot: null,
      postSnapshot: null, compression: 'zstd', initial: { mode: 'network' }, startAt: null, bandwidthBytesPerSec: null, paused: false, createdAt: new Date().toISOString(),
    });
    const replicator = new Replicator({ ...(await engineContext(state, silentLogger)), retry: { attempts: 1 } });
    expect((await replicator.runOnce())[0]).toMatchObject({ outcome: 'ok' });
    await merger.merge();
    await h!.expectReplicaEquals(source, 'after-base');

    await referee('qemu-io', ['-c', 'write -P 0x77 5M 128k', '-c', 'write -z 1M 64k', source]);
    expect((await replicator.runOnce())[0]).toMatchObject({ outcome: 'ok' });
    await referee('qemu-io', ['-c', 'write -P 0x23 40M 1M', source]);
    expect((await replicator.runOnce())[0]).toMatchObject({ outcome: 'ok' });
    await merger.merge();
    const status = await operator<{ vms: { name: string; state: string; health: string; disks: { appliedSequence: number }[] }[] }>(svc, 'GET', '/v1/vms?tenant=acme');
    expect(status.body.vms[0]).toMatchObject({ name: 'web01', state: 'replicating', health: 'normal' });
    expect(status.body.vms[0]!.disks[0]!.appliedSequence).toBeGreaterThanOrEqual(2);
    await h!.expectReplicaEquals(source, 'after-cycles');
  });
});
