/**
 * The agent against the real service (real PostgreSQL, real mutual TLS, the file object store through
 * the service's upload route): enrollment by the agent's own code, protecting a VHDX made by qemu-img
 * and written by qemu-io, an initial copy and cycles committed, and the bad-input paths that need a
 * service (a revoked certificate, a service that stops answering).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enroll } from '../../agent/enroll/enroll.js';
import { silentLogger } from '../../agent/replicate/context.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { engineContext } from '../../agent/replicate/from-state.js';
import { AgentState } from '../../agent/state/store.js';
import { HttpTransport } from '../../agent/transport/http.js';
import { referee } from '../helpers.js';
import type { TestEnv } from '../service/helpers.js';
import { operator, testEnv, testService } from '../service/helpers.js';

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  expect((await operator(svc, 'POST', '/v1/tenants', { name: 'acme' })).status).toBe(201);
  expect((await operator(svc, 'POST', '/v1/tenants/acme/authorizations', { pattern: '*.acme.test' })).status).toBeLessThan(300);
});
afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

async function token(): Promise<string> {
  const r = await operator<{ token: string }>(svc, 'POST', '/v1/tenants/acme/tokens', {});
  expect(r.status).toBe(201);
  return r.body.token;
}

async function enrolledState(name: string): Promise<AgentState> {
  const state = new AgentState(join(env.dir, `agent-${name}`));
  const r = await enroll(state, { serviceUrl: svc.agentUrl, token: await token(), serverName: `${name}.acme.test` });
  expect(r).toMatchObject({ tenant: 'acme', serverName: `${name}.acme.test` });
  return state;
}

async function protectVhdx(state: AgentState, vm: string): Promise<string> {
  const path = join(env.dir, `${vm}.vhdx`);
  await referee('qemu-img', ['create', '-q', '-f', 'vhdx', path, '48M']);
  await referee('qemu-io', ['-c', 'write -P 0x5a 1M 2M', '-c', 'write -P 0x11 33M 64k', path]);
  await state.writeConfig({
    version: 1, name: vm, disks: [{ id: 'disk0', path }], frequencyMs: 30_000, history: 0, appConsistentEveryMs: null, preSnapshot: null,
    postSnapshot: null, compression: 'zstd', initial: { mode: 'network' }, startAt: null, bandwidthBytesPerSec: null, paused: false, createdAt: new Date().toISOString(),
  });
  return path;
}

describe('agent and service', () => {
  it('enrolls, registers a VM, ships its base and a cycle, and the service records every commit', async () => {
    const state = await enrolledState('hv01');
    const path = await protectVhdx(state, 'web01');
    const replicator = new Replicator({ ...(await engineContext(state, silentLogger)), retry: { attempts: 1 } });
    const [first] = await replicator.runOnce();
    expect(first, first?.error).toMatchObject({ vm: "web01", outcome: "ok" });
    const p = await state.readProgress('web01');
    expect(p.disks.disk0).toMatchObject({ generation: 1, nextSequence: 2, inflight: [] });
    // The base read the 8 MiB slots holding data (at 1 MiB and 33 MiB); the holes are no chunks.
    expect(p.disks.disk0!.initial).toMatchObject({ state: 'done', bytesDone: 16 << 20, bytesTotal: 16 << 20 });

    await referee('qemu-io', ['-c', 'write -P 0x77 5M 128k', path]);
    const [second] = await replicator.runOnce();
    expect(second!.stats!.changedBytes).toBe(128 << 10);
    expect(svc.enqueued.filter((e) => e.vm === 'web01').length).toBeGreaterThanOrEqual(2);
    const vms = await operator<{ vms?: { name: string }[] } | { name: string }[]>(svc, 'GET', '/v1/vms?tenant=acme');
    expect(JSON.stringify(vms.body)).toContain('web01');
  });

  it('tells a clear line when the service stops answering, and carries the changes to the next cycle', async () => {
    const state = await enrolledState('hv03');
    const path = await protectVhdx(state, 'app01');
    const ctx = { ...(await engineContext(state, silentLogger)), retry: { attempts: 1 } };
    expect((await new Replicator(ctx).runOnce())[0]!.outcome).toBe('ok');
    await referee('qemu-io', ['-c', 'write -P 0x42 7M 64k', path]);
    const before = await state.readProgress('app01');
    const dead = { ...ctx, transport: HttpTransport.fromIdentity({ ...(await state.readIdentity()), identity: { ...(await state.readIdentity()).identity, serviceUrl: 'https://127.0.0.1:1' } }) };
    const [failed] = await new Replicator(dead).runOnce();
    expect(failed).toMatchObject({ outcome: 'failed', error: 'service https://127.0.0.1:1 does not answer: connection refused' });
    // The position is untouched; the failure is recorded for status.
    const after = await state.readProgress('app01');
    expect({ ...after, lastCycle: before.lastCycle, counts: before.counts }).toEqual(before);
    expect(after.lastCycle).toMatchObject({ outcome: 'failed', error: 'service https://127.0.0.1:1 does not answer: connection refused' });
    expect(after.counts.failed).toBe(before.counts.failed + 1);
    const [ok] = await new Replicator(ctx).runOnce();
    expect(ok!.stats!.changedBytes).toBe(64 << 10);
  });

  it('renews its certificate after two thirds of its validity and keeps replicating with it', async () => {
    const state = await enrolledState('hv04');
    await protectVhdx(state, 'mail01');
    const before = await state.readIdentity();
    const later = () => new Date(Date.now() + 25 * 86_400_000); // of a 30-day certificate
    const ctx = { ...(await engineContext(state, silentLogger, later)), retry: { attempts: 1 } };
    const after = await state.readIdentity();
    expect(after.certPem).not.toBe(before.certPem);
    expect(after.keyPem).not.toBe(before.keyPem);
    expect(Date.parse(after.identity.certNotAfter)).toBeGreaterThanOrEqual(Date.parse(before.identity.certNotAfter));
    // Not due again right after renewal.
    await engineContext(state, silentLogger);
    expect((await state.readIdentity()).certPem).toBe(after.certPem);
    const [r] = await new Replicator({ ...ctx, now: () => new Date() }).runOnce();
    expect(r, r?.error).toMatchObject({ outcome: 'ok' });
  });

  it('reports a revoked certificate as a clear error and leaves the VM state untouched', async () => {
    const state = await enrolledState('hv02');
    await protectVhdx(state, 'db01');
    const replicator = new Replicator({ ...(await engineContext(state, silentLogger)), retry: { attempts: 1 } });
    expect((await replicator.runOnce())[0]!.outcome).toBe('ok');
    const before = await state.readProgress('db01');
    expect((await operator(svc, 'POST', '/v1/tenants/acme/revocations', { server: 'hv02.acme.test' })).status).toBe(200);
    const [r] = await replicator.runOnce();
    expect(r).toMatchObject({ outcome: 'failed', error: expect.stringMatching(/revoked/i) });
    expect(r!.error).not.toContain('\n');
    const after = await state.readProgress('db01');
    expect({ ...after, lastCycle: before.lastCycle, counts: before.counts }).toEqual(before);
    expect(after.lastCycle).toMatchObject({ outcome: 'failed', error: expect.stringMatching(/revoked/i) });
  });
});
