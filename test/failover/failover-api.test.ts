/**
 * The failover API's refusals and isolation, with the real service, catalog, Redis and failover
 * host: another tenant's credentials see nothing (404 as if absent), a viewer cannot act, bad input is
 * one clear 4xx with the state unchanged, the verbs of one kind are refused on the other, a repeated
 * Idempotency-Key returns the first failover, and the VM's hardware is validated before it is stored.
 * The one VM here is a small data disk with nothing to boot: its failovers are stopped at once.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { referee } from '../helpers.js';
import { FailoverScenario, qemuAvailable } from './failover-harness.js';

const hasQemu = qemuAvailable('the failover API tests');

describe.skipIf(!hasQemu)('failover API', () => {
  let s: FailoverScenario;
  let other: string;
  let viewer: string;
  let admin: string;

  beforeAll(async () => {
    s = await FailoverScenario.start();
    const disk = join(s.env.dir, 'db01.vhdx');
    await referee('qemu-img', ['create', '-q', '-f', 'vhdx', disk, '16M']);
    await referee('qemu-io', ['-c', 'write -P 0x5a 0 1M', disk]);
    await s.protect('db01', [disk]);
    await s.replicate();
    expect((await s.api('POST', '/v1/tenants', { name: 'globex' })).status).toBe(201);
    other = await s.tenantToken('tenant-admin', 'globex');
    viewer = await s.tenantToken('tenant-viewer', 'acme');
    admin = await s.tenantToken('tenant-admin', 'acme');
    // Ready never comes for a disk with nothing to boot; the tests stop what they start.
    const hw = await s.api('PUT', '/v1/tenants/acme/vms/db01/hardware', { firmware: 'bios', cpus: 1, memoryMiB: 128, guestOs: 'other', readyProbes: [{ kind: 'console', pattern: 'never-printed' }] });
    expect(hw.status, JSON.stringify(hw.body)).toBe(200);
  }, 120_000);

  afterAll(async () => {
    await s?.stop();
  }, 120_000);

  const stopAll = async () => {
    for (const f of (await s.api<{ failovers: { id: string; kind: string }[] }>('GET', '/v1/failovers?active=true')).body.failovers) {
      await s.api('POST', `/v1/failovers/${f.id}/${f.kind === 'test' ? 'stop' : 'revert'}`, {});
      await s.waitFor(f.id, (r) => r.endedAt !== null, 120_000);
    }
  };

  it('answers another tenant 404 for the VM, its failovers and their screenshots, as if they did not exist', async () => {
    const mine = await s.api('POST', '/v1/tenants/acme/vms/db01/failovers', { kind: 'test' }, admin);
    expect(mine.status, JSON.stringify(mine.body)).toBe(202);
    const id = mine.body.id;
    for (const [method, path] of [
      ['POST', '/v1/tenants/acme/vms/db01/failovers'], ['GET', '/v1/tenants/acme/vms/db01/failovers'], ['GET', '/v1/tenants/acme/failovers'],
      ['GET', `/v1/tenants/acme/failovers/${id}`], ['GET', `/v1/tenants/acme/failovers/${id}/screenshot.png`], ['POST', `/v1/tenants/acme/failovers/${id}/stop`],
      ['GET', '/v1/tenants/acme/vms/db01/hardware'], ['PUT', '/v1/tenants/acme/vms/db01/hardware'],
      ['GET', `/v1/tenants/globex/failovers/${id}`], ['POST', `/v1/tenants/globex/failovers/${id}/stop`], ['POST', '/v1/tenants/globex/vms/db01/failovers'],
    ] as const) {
      const r = await s.api(method, path, method === 'GET' ? undefined : { kind: 'test' }, other);
      expect(r.status, `${method} ${path}: ${JSON.stringify(r.body)}`).toBe(404);
    }
    // The hoster-wide routes are not for tenant roles.
    expect((await s.api('GET', `/v1/failovers/${id}`, undefined, other)).status).toBe(403);
    expect((await s.api('GET', '/v1/failovers', undefined, admin)).status).toBe(403);
    // Still running for its own tenant.
    expect((await s.api('GET', `/v1/tenants/acme/failovers/${id}`, undefined, admin)).body.endedAt).toBeNull();
    await stopAll();
  }, 300_000);

  it('lets a viewer read but not act', async () => {
    expect((await s.api('GET', '/v1/tenants/acme/vms/db01/failovers', undefined, viewer)).status).toBe(200);
    const r = await s.api('POST', '/v1/tenants/acme/vms/db01/failovers', { kind: 'test' }, viewer);
    expect(r.status).toBe(403);
    expect((await s.api<{ failovers: unknown[] }>('GET', '/v1/failovers?active=true')).body.failovers).toEqual([]);
  });

  it('refuses bad input with one clear 4xx and changes nothing', async () => {
    const cases: [unknown, number, RegExp][] = [
      [{ kind: 'drill' }, 400, /kind must be one of "test", "planned", "unplanned"/],
      [{ kind: 'test', point: 'yesterday' }, 400, /latest, latest-consistent or a point id/],
      [{ kind: 'test', point: '999999' }, 404, /no recovery point 999999/],
      [{ kind: 'unplanned', point: 'latest-consistent' }, 409, /no application-consistent recovery point/],
      [{ kind: 'test', extra: 1 }, 400, /extra/],
    ];
    for (const [body, status, message] of cases) {
      const r = await s.api<{ detail: string }>('POST', '/v1/tenants/acme/vms/db01/failovers', body);
      expect(r.status, JSON.stringify(r.body)).toBe(status);
      expect(r.body.detail).toMatch(message);
      expect(r.body.detail).not.toMatch(/\n|at .*\.ts/);
    }
    const none = await s.api<{ detail: string }>('POST', '/v1/tenants/acme/vms/nosuch/failovers', { kind: 'test' });
    expect(none.status).toBe(404);
    expect((await s.api('GET', '/v1/failovers/fo-nosuch')).status).toBe(404);
    expect((await s.api('POST', '/v1/failovers/fo-nosuch/commit', {})).status).toBe(404);
    const hw = await s.api<{ detail: string }>('PUT', '/v1/tenants/acme/vms/db01/hardware', { firmware: 'bios', secureBoot: true, cpus: 1, memoryMiB: 128, guestOs: 'linux' });
    expect(hw.status).toBe(400);
    expect(hw.body.detail).toMatch(/secureBoot needs firmware uefi/);
    const disk = await s.api<{ detail: string }>('PUT', '/v1/tenants/acme/vms/db01/hardware', { firmware: 'bios', cpus: 1, memoryMiB: 128, guestOs: 'linux', disks: { nodisk: { bus: 'virtio', order: 0 } } });
    expect(disk.status).toBe(400);
    expect(disk.body.detail).toMatch(/no disk nodisk/);
    expect((await s.api<{ failovers: unknown[] }>('GET', '/v1/failovers')).body.failovers).toHaveLength(1);
  });

  it('says clearly when no failover host has room, and changes nothing', async () => {
    const big = await s.api('PUT', '/v1/tenants/acme/vms/db01/hardware', { firmware: 'bios', cpus: 64, memoryMiB: 128, guestOs: 'other', readyProbes: [{ kind: 'console', pattern: 'never-printed' }] });
    expect(big.status).toBe(200);
    const before = (await s.api<{ failovers: unknown[] }>('GET', '/v1/failovers')).body.failovers.length;
    const r = await s.api<{ detail: string }>('POST', '/v1/tenants/acme/vms/db01/failovers', { kind: 'test' });
    expect(r.status).toBe(503);
    expect(r.body.detail).toMatch(/no failover host has room for 64 vCPUs and 128 MiB .*32 vCPUs/);
    expect((await s.api<{ failovers: unknown[] }>('GET', '/v1/failovers')).body.failovers).toHaveLength(before);
    expect((await s.api('PUT', '/v1/tenants/acme/vms/db01/hardware', { firmware: 'bios', cpus: 1, memoryMiB: 128, guestOs: 'other', readyProbes: [{ kind: 'console', pattern: 'never-printed' }] })).status).toBe(200);
  });

  it('marks a failover failed with qemu\'s reason when qemu dies, and leaves nothing behind', async () => {
    const r = await s.api('POST', '/v1/tenants/acme/vms/db01/failovers', { kind: 'test' });
    expect(r.status).toBe(202);
    const booting = await s.waitFor(r.body.id, (x) => x.steps.some((st) => st.step === 'start' && st.status === 'done'), 120_000);
    const pid = Number((await readFile(join(s.workDir(booting.id), 'qemu.pid'), 'utf8')).trim());
    process.kill(pid, 'SIGKILL');
    const failed = await s.waitFor(booting.id, (x) => x.endedAt !== null, 120_000).catch(async () => (await s.api('GET', `/v1/failovers/${booting.id}`)).body);
    expect(failed.state).toBe('failed');
    expect(failed.error).toMatch(/qemu/);
    expect(failed.steps.map((st) => `${st.step}:${st.status}`)).toEqual(expect.arrayContaining(['failed:failed', 'stop:done']));
    expect(existsSync(s.workDir(booting.id))).toBe(false);
    expect(await s.svc.ctx.db.query('SELECT * FROM point_pins')).toEqual([]);
  }, 300_000);

  it('starts a planned failover by asking the VM\'s agent for its final cycle, and cancels that ask on revert', async () => {
    const r = await s.api('POST', '/v1/tenants/acme/vms/db01/failovers', { kind: 'planned' }, admin);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    await s.waitFor(r.body.id, (x) => x.steps.some((st) => st.step === 'final-cycle' && st.status === 'started'), 60_000);
    let queued: { state: string; server_fqdn: string }[] = [];
    for (let i = 0; i < 100 && queued.length === 0; i++) {
      queued = await s.svc.ctx.db.query<{ state: string; server_fqdn: string }>(`SELECT state, server_fqdn FROM agent_commands WHERE tenant = 'acme' AND vm = 'db01' AND kind = 'planned-failover'`);
      if (queued.length === 0) await new Promise((res) => setTimeout(res, 100));
    }
    expect(queued).toEqual([{ state: 'queued', server_fqdn: 'hv01.acme.test' }]);
    // No point is cut before the agent's final cycle: forward logs are not held yet.
    expect((await s.api('GET', `/v1/failovers/${r.body.id}`)).body.point.id).toBeNull();
    expect((await s.api('POST', `/v1/failovers/${r.body.id}/revert`, {})).status).toBe(202);
    const done = await s.waitFor(r.body.id, (x) => x.endedAt !== null, 60_000);
    expect(done.state).toBe('reverted');
    const after = await s.svc.ctx.db.query<{ state: string }>(`SELECT state FROM agent_commands WHERE tenant = 'acme' AND vm = 'db01' AND kind = 'planned-failover'`);
    expect(after).toEqual([{ state: 'cancelled' }]);
  }, 180_000);

  it('returns the first failover for a repeated Idempotency-Key, and refuses the verbs of the other kind', async () => {
    const headers = { 'idempotency-key': 'drill-2026-12-07' };
    const call = () => fetch(`${s.svc.apiUrl}/v1/tenants/acme/vms/db01/failovers`, {
      method: 'POST', headers: { ...headers, authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'unplanned', point: 'latest' }),
    });
    const first = await call();
    expect(first.status).toBe(202);
    const second = await call();
    // The API's idempotency middleware gives the first answer again (docs/api.md, Idempotency).
    expect(second.status).toBe(202);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    const [a, b] = [(await first.json()) as { id: string }, (await second.json()) as { id: string }];
    expect(b.id).toBe(a.id);
    // A second real failover of the VM is refused while this one lives.
    const another = await s.api<{ detail: string }>('POST', '/v1/tenants/acme/vms/db01/failovers', { kind: 'unplanned', point: 'latest' });
    expect(another.status).toBe(409);
    expect(another.body.detail).toMatch(new RegExp(`already has a failover ${a.id}`));
    expect((await s.api('POST', `/v1/failovers/${a.id}/stop`, {})).status).toBe(409);
    // The VM's status says it is failed over, and /metrics counts the failover.
    await s.waitFor(a.id, (x) => x.point.id !== null, 60_000);
    const vms = await s.api<{ vms: { name: string; state: string; failovers: { id: string }[] }[] }>('GET', '/v1/vms?tenant=acme');
    const db01 = vms.body.vms.find((v) => v.name === 'db01')!;
    expect(db01.state).toMatch(/^failed over \(unplanned, /);
    expect(db01.failovers.map((f) => f.id)).toEqual([a.id]);
    const metrics = await (await fetch(`${s.svc.apiUrl}/metrics`)).text();
    expect(metrics).toMatch(/lifeboat_failovers\{kind="unplanned",state="[a-z]+"\} 1/);
    expect(metrics).toMatch(/lifeboat_failover_hosts\{live="true"\} 1/);
    await stopAll();
    const ended = await s.api('GET', `/v1/failovers/${a.id}`);
    expect(ended.body.state).toBe('reverted');
    expect((await s.api('POST', `/v1/failovers/${a.id}/commit`, {})).status).toBe(409);
  }, 300_000);

  it('stops a test failover at its tenant\'s maximum duration, set per tenant', async () => {
    const set = await s.api<{ testFailoverMaxHours: number; testFailoverMaxHoursIsDefault: boolean }>('PATCH', '/v1/tenants/acme', { testFailoverMaxHours: 0.5 });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    expect(set.body).toMatchObject({ name: 'acme', testFailoverMaxHours: 0.5, testFailoverMaxHoursIsDefault: false });
    // Only the hoster sets it; bad values and unknown tenants are one clear 4xx.
    expect((await s.api('PATCH', '/v1/tenants/acme', { testFailoverMaxHours: 100 }, admin)).status).toBe(403);
    for (const bad of [0, 721, 'two', -1]) {
      const r = await s.api<{ detail: string }>('PATCH', '/v1/tenants/acme', { testFailoverMaxHours: bad });
      expect(r.status, JSON.stringify(r.body)).toBe(400);
      expect(r.body.detail).toMatch(/testFailoverMaxHours/);
    }
    expect((await s.api('PATCH', '/v1/tenants/nosuch', { testFailoverMaxHours: 2 })).status).toBe(404);
    const listed = await s.api<{ tenants: { name: string; testFailoverMaxHours: number }[] }>('GET', '/v1/tenants');
    expect(listed.body.tenants.find((t) => t.name === 'acme')!.testFailoverMaxHours).toBe(0.5);
    expect(listed.body.tenants.find((t) => t.name === 'globex')!.testFailoverMaxHours).toBe(24);

    const r = await s.api('POST', '/v1/tenants/acme/vms/db01/failovers', { kind: 'test', point: 'latest' });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    // The engine reads its clock, the catalog its own: within a second of each other.
    expect(Math.abs(Date.parse(r.body.expiresAt!) - Date.parse(r.body.requestedAt) - 30 * 60_000)).toBeLessThan(1000);
    await s.waitFor(r.body.id, (x) => x.steps.some((st) => st.step === 'start' && st.status === 'done'), 120_000);
    // Half an hour later, as the host's monitor sees it.
    await s.svc.ctx.db.query("UPDATE failovers SET requested_at = requested_at - interval '30 minutes 1 second', expires_at = expires_at - interval '30 minutes 1 second' WHERE id = $1", [r.body.id]);
    await s.svc.failoverHost!.tick();
    const done = await s.waitFor(r.body.id, (x) => x.endedAt !== null, 120_000);
    expect(done.state).toBe('stopped');
    expect(done.steps.find((st) => st.step === 'stop requested')).toMatchObject({ cause: 'expiry', detail: 'the test failover reached its maximum duration (0.5 h)' });
    expect(existsSync(s.workDir(r.body.id))).toBe(false);

    const reset = await s.api<{ testFailoverMaxHours: number; testFailoverMaxHoursIsDefault: boolean }>('PATCH', '/v1/tenants/acme', { testFailoverMaxHours: null });
    expect(reset.body).toMatchObject({ testFailoverMaxHours: 24, testFailoverMaxHoursIsDefault: true });
  }, 300_000);
});
