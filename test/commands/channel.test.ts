/**
 * The command channel against the real service (PostgreSQL catalog): a command queued for an agent is
 * delivered to that agent alone (not to another tenant's, not to another server of its tenant), a
 * waiting long-poll answers as soon as a command is queued (in this process, and from another process
 * through the catalog), a delivered command comes again only to a new agent instance, progress and
 * results land on the row, and cancelled or expired commands are never delivered.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openPg } from '../../service/catalog/pg.js';
import { cancelCommand, getCommand, queueCommand, waitForCommand } from '../../service/commands/commands.js';
import { awaitFinalCycle, cancelFinalCycle } from '../../service/commands/planned.js';
import { CommandPollMs } from '../../service/commands/wake.js';
import type { TestEnv, TlsIdentity } from '../service/helpers.js';
import { PgUrl, enrolledAgent, httpsJson, testEnv, testService } from '../service/helpers.js';

type Agent = TlsIdentity & { tenant: string; serverName: string };
interface Delivered { commands: { id: string; kind: string; vm: string; payload: Record<string, unknown>; deliveries: number }[] }

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let hv01: Agent;
let hv02: Agent;
let other: Agent;

const call = <T = Record<string, unknown>>(agent: Agent, method: string, path: string, body?: unknown) =>
  httpsJson<T>(`${svc.agentUrl}${path}`, { method, caPem: svc.ctx.ca.certPem, identity: agent, ...(body === undefined ? {} : { body }) });
const poll = (agent: Agent, instance: string, wait = 0) => call<Delivered>(agent, 'GET', `/v1/commands?wait=${wait}&instance=${instance}`);
const queue = (vm = 'web01', payload: Record<string, unknown> = { failover: `fo-${Math.random().toString(36).slice(2)}` }) =>
  queueCommand(svc.ctx.db, { tenant: 'acme', vm, kind: 'planned-failover', payload });

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  hv01 = await enrolledAgent(svc, 'acme', '*.acme.test', 'hv01.acme.test');
  hv02 = await enrolledAgent(svc, 'acme', 'hv02.acme.test', 'hv02.acme.test');
  other = await enrolledAgent(svc, 'globex', '*.globex.test', 'hv01.globex.test');
  const registration = { disks: [{ id: 'disk0', virtualSize: 1 << 20, format: 'raw' }], frequency: '30s', history: 0, appConsistentEvery: 0, compression: 'zstd' };
  expect((await call(hv01, 'PUT', '/v1/vms/web01', registration)).status).toBe(201);
  // The other tenant has a VM of the same name: it must not see acme's commands for it.
  expect((await call(other, 'PUT', '/v1/vms/web01', registration)).status).toBe(201);
});

// Each test starts with no open command (an unfinished one would be delivered to every new instance).
afterEach(async () => {
  await svc.ctx.db.query(`UPDATE agent_commands SET state = 'cancelled', finished_at = now() WHERE state IN ('queued', 'delivered', 'running')`);
});

afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

describe('command channel', () => {
  it('delivers a command to the agent of the VM\'s server only', async () => {
    const cmd = await queue();
    expect(cmd).toMatchObject({ state: 'queued', serverFqdn: 'hv01.acme.test', tenant: 'acme' });
    expect((await poll(other, 'other-instance-1')).body.commands).toEqual([]);
    expect((await poll(hv02, 'hv02-instance-1')).body.commands).toEqual([]);
    // Neither can touch it: another tenant's or server's command reads as none.
    for (const stranger of [other, hv02]) {
      expect((await call(stranger, 'POST', `/v1/commands/${cmd.id}/progress`, { step: 'x' })).status).toBe(404);
      expect((await call(stranger, 'POST', `/v1/commands/${cmd.id}/result`, { ok: false, error: 'no' })).status).toBe(404);
    }
    const got = await poll(hv01, 'hv01-instance-1');
    expect(got.status).toBe(200);
    expect(got.body.commands.map((c) => c.id)).toEqual([cmd.id]);
    expect(got.body.commands[0]).toMatchObject({ kind: 'planned-failover', vm: 'web01', payload: cmd.payload, deliveries: 1 });
    expect((await getCommand(svc.ctx.db, cmd.id))?.state).toBe('delivered');
    // Not again to the same instance; again to a new one (the agent restarted), still delivered.
    expect((await poll(hv01, 'hv01-instance-1')).body.commands).toEqual([]);
    const again = await poll(hv01, 'hv01-instance-2');
    expect(again.body.commands.map((c) => [c.id, c.deliveries])).toEqual([[cmd.id, 2]]);
    // Progress makes it running; the result finishes it; the first result wins.
    expect((await call(hv01, 'POST', `/v1/commands/${cmd.id}/progress`, { step: 'hold', detail: 'no new cycle' })).body).toEqual({ state: 'running' });
    expect((await call(hv01, 'POST', `/v1/commands/${cmd.id}/result`, { ok: true, result: { cycle: 7, capturedAt: '2026-12-07T10:00:00.000Z' } })).body).toEqual({ state: 'done' });
    expect((await call(hv01, 'POST', `/v1/commands/${cmd.id}/result`, { ok: false, error: 'late' })).body).toEqual({ state: 'done' });
    const done = await waitForCommand(svc.ctx.db, cmd.id, 1000);
    expect(done).toMatchObject({ state: 'done', result: { cycle: 7 }, error: null });
    expect(done.progress.map((p) => p.step)).toEqual(['hold']);
    // A finished command is delivered to nobody any more.
    expect((await poll(hv01, 'hv01-instance-3')).body.commands).toEqual([]);
  });

  it('takes a result as large as a failback-apply of every 64 KiB block of a 4 GiB disk, and keeps other bodies to 64 KiB', async () => {
    const cmd = await queue();
    const ranges = Array.from({ length: 65_536 }, (_, i) => ({ offset: i * 65_536, length: 65_536, sha256: i.toString(16).padStart(64, '0') }));
    const result = { disks: [{ disk: 'disk0', ranges }] };
    expect(JSON.stringify({ ok: true, result }).length).toBeGreaterThan(7 << 20);
    // Any other route still refuses a body over 64 KiB.
    expect((await call(hv01, 'POST', `/v1/commands/${cmd.id}/progress`, { step: 'x'.repeat(70_000) })).status).toBe(413);
    expect((await call(hv01, 'POST', `/v1/commands/${cmd.id}/result`, { ok: true, result })).body).toEqual({ state: 'done' });
    const done = await waitForCommand(svc.ctx.db, cmd.id, 1000);
    expect((done.result as typeof result).disks[0]!.ranges).toHaveLength(65_536);
    expect((done.result as typeof result).disks[0]!.ranges[65_535]).toEqual(ranges[65_535]);
  });

  it('answers a waiting long-poll as soon as a command is queued, in this process and from another', async () => {
    const started = Date.now();
    const waiting = poll(hv01, 'hv01-longpoll-1', 20);
    await new Promise((r) => setTimeout(r, 500));
    const cmd = await queue();
    const got = await waiting;
    const ms = Date.now() - started - 500;
    expect(got.body.commands.map((c) => c.id)).toEqual([cmd.id]);
    expect(ms).toBeLessThan(500);
    console.info(`long-poll answered ${ms} ms after the command was queued in this process`);

    // Queued through a connection of its own (as a failover host in another process would).
    const db = await openPg(PgUrl, env.schema);
    try {
      // The same instance: the command above, delivered to it and not finished, does not come again.
      const waiting2 = poll(hv01, 'hv01-longpoll-1', 20);
      await new Promise((r) => setTimeout(r, 500));
      const t = Date.now();
      const cmd2 = await queueCommand(db, { tenant: 'acme', vm: 'web01', kind: 'planned-failover', payload: { failover: 'fo-other-process' } });
      const got2 = await waiting2;
      expect(got2.body.commands.map((c) => c.id)).toEqual([cmd2.id]);
      const ms2 = Date.now() - t;
      expect(ms2).toBeLessThan(CommandPollMs + 1000);
      console.info(`long-poll answered ${ms2} ms after the command was queued from another connection`);
    } finally {
      await db.close();
    }
    // With nothing queued, a long-poll waits its time and answers empty.
    const t0 = Date.now();
    expect((await poll(hv01, 'hv01-longpoll-1', 1)).body.commands).toEqual([]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
  });

  it('is idempotent for a caller that queues again, and never delivers cancelled or expired commands', async () => {
    const a = await queue('web01', { failover: 'fo-same' });
    const b = await queue('web01', { failover: 'fo-same' });
    expect(b.id).toBe(a.id);
    expect((await cancelCommand(svc.ctx.db, a.id, 'failover stopped'))?.state).toBe('cancelled');
    const expiring = await queueCommand(svc.ctx.db, { tenant: 'acme', vm: 'web01', kind: 'planned-failover', payload: { failover: 'fo-expire' }, expiresInMs: 1 });
    await new Promise((r) => setTimeout(r, 20));
    expect((await poll(hv01, 'hv01-instance-9')).body.commands).toEqual([]);
    expect(await getCommand(svc.ctx.db, expiring.id)).toMatchObject({ state: 'failed', error: expect.stringMatching(/^expired/) });
    // A cancelled command's agent learns it from its next progress report.
    const c = await queue();
    expect((await poll(hv01, 'hv01-instance-10')).body.commands.map((x) => x.id)).toEqual([c.id]);
    await cancelCommand(svc.ctx.db, c.id);
    expect((await call(hv01, 'POST', `/v1/commands/${c.id}/progress`, { step: 'final-cycle' })).body).toEqual({ state: 'cancelled' });
    // A VM of another tenant cannot be addressed; bad queries are one clear error.
    await expect(queueCommand(svc.ctx.db, { tenant: 'acme', vm: 'nosuch', kind: 'planned-failover', payload: {} })).rejects.toThrow(/no VM nosuch/);
    const bad = await call<{ error: { message: string } }>(hv01, 'GET', '/v1/commands?wait=99&instance=hv01-instance-11');
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toMatch(/wait/);
    expect((await call(hv01, 'GET', '/v1/commands?wait=0&instance=x')).status).toBe(400);
  });

  it('gives the failover job the final cycle once the agent reported it, and the agent\'s reason when it failed', async () => {
    const f = { id: 'fo-job-1', tenant: 'acme', vm: 'web01' };
    expect(await awaitFinalCycle(svc.ctx.db, f, 100)).toBeUndefined();
    const [cmd] = (await poll(hv01, 'hv01-job-1')).body.commands;
    expect(cmd).toMatchObject({ payload: { failover: 'fo-job-1' } });
    expect(await awaitFinalCycle(svc.ctx.db, f, 100)).toBeUndefined();
    const result = { cycle: 1796000000000, capturedAt: '2026-12-07T15:20:00.000Z', consistency: 'application', shutdown: 'hook' };
    await call(hv01, 'POST', `/v1/commands/${cmd!.id}/result`, { ok: true, result });
    expect(await awaitFinalCycle(svc.ctx.db, f, 100)).toEqual(result);

    const g = { id: 'fo-job-2', tenant: 'acme', vm: 'web01' };
    expect(await awaitFinalCycle(svc.ctx.db, g, 10)).toBeUndefined();
    const [cmd2] = (await poll(hv01, 'hv01-job-1')).body.commands;
    await call(hv01, 'POST', `/v1/commands/${cmd2!.id}/result`, { ok: false, error: 'shutdown hook failed: "sh off.sh" exited 1' });
    await expect(awaitFinalCycle(svc.ctx.db, g, 100)).rejects.toThrow(/did not ship the final cycle of web01 .*failed\): shutdown hook failed/);

    const k = { id: 'fo-job-3', tenant: 'acme', vm: 'web01' };
    expect(await awaitFinalCycle(svc.ctx.db, k, 10)).toBeUndefined();
    await cancelFinalCycle(svc.ctx.db, k, 'failover fo-job-3 reverted');
    expect((await poll(hv01, 'hv01-job-2')).body.commands).toEqual([]);
    await expect(awaitFinalCycle(svc.ctx.db, k, 10)).rejects.toThrow(/cancelled\): failover fo-job-3 reverted/);
  });

  it('refuses the agent\'s planned-failover request where no failover queues run, and another tenant\'s VM as none', async () => {
    const r = await call<{ error: { code: string; message: string } }>(hv01, 'POST', '/v1/vms/web01/failovers', { kind: 'planned' });
    expect(r.status).toBe(503);
    expect(r.body.error.message).toMatch(/cannot start failovers/);
    expect((await call(hv01, 'POST', '/v1/vms/nosuch/failovers', { kind: 'planned' })).status).toBe(404);
    expect((await call(hv01, 'POST', '/v1/vms/web01/failovers', { kind: 'unplanned' })).status).toBe(400);
    expect((await call(other, 'GET', '/v1/failovers/fo-nosuch')).status).toBe(404);
  });
});
