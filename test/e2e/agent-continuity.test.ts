/**
 * The agent's state out of step with the service, against the real service and its merge worker:
 * enrolling an enrolled agent again (refused; with force every VM starts a new generation), an
 * identity replaced by hand (the agent obeys the service's expect.action "initial"), and a state
 * directory restored from an older backup (a base of a new generation, a delta against the replica).
 * Every case ends with the replica exported and compared with the source by qemu-img.
 */
import { cp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enroll } from '../../agent/enroll/enroll.js';
import { silentLogger } from '../../agent/replicate/context.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { engineContext } from '../../agent/replicate/from-state.js';
import { AgentState } from '../../agent/state/store.js';
import type { Merger } from '../../service/workers/merger.js';
import { referee } from '../helpers.js';
import type { MergeHarness, TestEnv } from '../service/helpers.js';
import { mergeHarness, operator } from '../service/helpers.js';

let h: MergeHarness | undefined;
let env: TestEnv;
let svc: MergeHarness['svc'];
let merger: Merger;

beforeAll(async () => {
  h = await mergeHarness();
  ({ env, svc, merger } = h);
  for (const tenant of ['acme', 'globex']) {
    expect((await operator(svc, 'POST', '/v1/tenants', { name: tenant })).status).toBe(201);
    expect((await operator(svc, 'POST', `/v1/tenants/${tenant}/authorizations`, { pattern: '*.test' })).status).toBeLessThan(300);
  }
});
afterAll(async () => {
  await h?.close();
});

async function token(tenant: string): Promise<string> {
  const r = await operator<{ token: string }>(svc, 'POST', `/v1/tenants/${tenant}/tokens`, {});
  expect(r.status).toBe(201);
  return r.body.token;
}

async function protectVhdx(state: AgentState, vm: string): Promise<string> {
  const path = join(env.dir, `${vm}.vhdx`);
  await referee('qemu-img', ['create', '-q', '-f', 'vhdx', path, '32M']);
  await referee('qemu-io', ['-c', 'write -P 0x5a 1M 2M', '-c', 'write -P 0x11 17M 64k', path]);
  await state.writeConfig({
    version: 1, name: vm, disks: [{ id: 'disk0', path }], frequencyMs: 30_000, history: 0, appConsistentEveryMs: null, preSnapshot: null,
    postSnapshot: null, compression: 'zstd', initial: { mode: 'network' }, startAt: null, bandwidthBytesPerSec: null, paused: false, createdAt: new Date().toISOString(),
  });
  return path;
}

async function runOk(state: AgentState): Promise<void> {
  const [r] = await new Replicator({ ...(await engineContext(state, silentLogger)), retry: { attempts: 1 } }).runOnce();
  expect(r, r?.error).toMatchObject({ outcome: 'ok' });
}

interface DiskView { state: string; generation: number; appliedSequence: number; pendingLogs: number }
async function disk(tenant: string, vm: string): Promise<DiskView> {
  const r = await operator<{ vms: { name: string; disks: DiskView[] }[] }>(svc, 'GET', `/v1/vms?tenant=${tenant}`);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.vms.find((v) => v.name === vm)!.disks[0]!;
}

async function expectReplicaEquals(tenant: string, vm: string, source: string): Promise<void> {
  const out = join(env.dir, `${tenant}-${vm}-${Date.now()}.raw`);
  const r = await operator(svc, 'POST', `/v1/tenants/${tenant}/vms/${vm}/exports`, { disk: 'disk0', format: 'raw', path: out });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', source, out]);
}

describe('agent state out of step with the service', () => {
  it('refuses to enroll an enrolled agent; --force starts every VM over under the new tenant', async () => {
    const state = new AgentState(join(env.dir, 'agent-a'));
    await enroll(state, { serviceUrl: svc.agentUrl, token: await token('acme'), serverName: 'hv01.test' });
    const source = await protectVhdx(state, 'web01');
    await runOk(state);
    const before = await state.readIdentity();

    const other = await token('globex');
    await expect(enroll(state, { serviceUrl: svc.agentUrl, token: other, serverName: 'hv01.test' }))
      .rejects.toThrow(/already enrolled as hv01\.test with tenant acme .*--force/);
    expect(await state.readIdentity()).toEqual(before);

    // The refusal did not use the token up.
    await enroll(state, { serviceUrl: svc.agentUrl, token: other, serverName: 'hv01.test', force: true });
    expect((await state.readIdentity()).identity.tenant).toBe('globex');
    await referee('qemu-io', ['-c', 'write -P 0x33 9M 64k', source]);
    await runOk(state);
    const p = await state.readProgress('web01');
    // A full base of a new generation (globex holds no replica), then this cycle's log.
    expect(p.disks.disk0).toMatchObject({ nextSequence: 2, initial: { state: 'done', mode: 'full' } });
    await merger.merge();
    expect(await disk('globex', 'web01')).toMatchObject({ state: 'replicating', generation: p.disks.disk0!.generation });
    await expectReplicaEquals('globex', 'web01', source);
  });

  it('sends a base when the service expects one though the agent holds its base done', async () => {
    const state = new AgentState(join(env.dir, 'agent-b'));
    await enroll(state, { serviceUrl: svc.agentUrl, token: await token('acme'), serverName: 'hv02.test' });
    const source = await protectVhdx(state, 'app01');
    await runOk(state);
    // The identity replaced behind the agent's back (a copied identity directory): the new tenant's
    // service has never seen the VM.
    const scratch = new AgentState(join(env.dir, 'agent-b-new'));
    await enroll(scratch, { serviceUrl: svc.agentUrl, token: await token('globex'), serverName: 'hv02.test' });
    await state.writeIdentity(await scratch.readIdentity());

    await referee('qemu-io', ['-c', 'write -P 0x44 3M 64k', source]);
    await runOk(state);
    await merger.merge();
    expect(await disk('globex', 'app01')).toMatchObject({ state: 'replicating', pendingLogs: 0 });
    await expectReplicaEquals('globex', 'app01', source);
    await referee('qemu-io', ['-c', 'write -P 0x45 5M 64k', source]);
    await runOk(state);
    await merger.merge();
    expect(await disk('globex', 'app01')).toMatchObject({ appliedSequence: 2, pendingLogs: 0 });
    await expectReplicaEquals('globex', 'app01', source);
  });

  for (const merged of [true, false]) {
    it(`a state directory restored from an older backup starts a new generation with a delta base (logs since the backup ${merged ? 'applied' : 'still pending'})`, async () => {
      const name = merged ? 'db01' : 'db02';
      const state = new AgentState(join(env.dir, `agent-${name}`));
      await enroll(state, { serviceUrl: svc.agentUrl, token: await token('acme'), serverName: `${name}.test` });
      const source = await protectVhdx(state, name);
      await runOk(state);
      await merger.merge();
      const backup = join(env.dir, `backup-${name}`);
      await cp(state.dir, backup, { recursive: true });

      for (const at of ['4M', '6M']) {
        await referee('qemu-io', ['-c', `write -P 0x66 ${at} 64k`, source]);
        await runOk(state);
      }
      if (merged) await merger.merge();
      const generation = (await state.readProgress(name)).disks.disk0!.generation;

      await rm(state.dir, { recursive: true });
      await cp(backup, state.dir, { recursive: true });
      await referee('qemu-io', ['-c', 'write -P 0x77 8M 64k', source]);
      // Pending logs show only when a log is refused: that cycle fails once, naming why; the next recovers.
      // The refusal is the commit's (another size or digest than the log committed before) or, since
      // committed objects are write-once, the stored object's size differing from the agent's commit.
      const replicator = new Replicator({ ...(await engineContext(state, silentLogger)), retry: { attempts: 1 } });
      let [r] = await replicator.runOnce();
      if (!merged) {
        expect(r).toMatchObject({ outcome: 'failed', error: expect.stringMatching(/(committed before|holds \d+ bytes, the commit says \d+).*this agent's state is older than the service's/) });
        [r] = await replicator.runOnce();
      }
      expect(r, r?.error).toMatchObject({ outcome: 'ok' });
      const p = await state.readProgress(name);
      expect(p.disks.disk0!.generation).toBeGreaterThan(generation);
      expect(p.disks.disk0!.initial).toMatchObject({ state: 'done', mode: 'delta' });
      await merger.merge();
      expect(await disk('acme', name)).toMatchObject({ state: 'replicating', generation: p.disks.disk0!.generation });
      await expectReplicaEquals('acme', name, source);
      await referee('qemu-io', ['-c', 'write -P 0x78 10M 64k', source]);
      await runOk(state);
      await merger.merge();
      await expectReplicaEquals('acme', name, source);
    });
  }
});
