/**
 * Quotas and hardware plans against the real service and PostgreSQL: a new VM over the protected-VM
 * quota and a new replica's copy over the storage quota are refused (409 quota_exceeded, and an
 * event) while what already replicates goes on with a warning; a test failover over the concurrent
 * quota or its tenant's hardware plan is refused, a real one goes ahead with warnings and an event;
 * the admission check says who fits; another tenant's credentials see none of it.
 *
 * The failover queue here is a recorder (named so): these tests stop before a failover host would
 * run anything, and the failover hosts are catalog rows with a fresh heartbeat.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestFailover } from '../../service/failover/engine.js';
import type { FailoverQueues } from '../../service/failover/queue.js';
import { signApiToken } from '../../service/trust/tokens.js';
import { runBin } from '../helpers.js';
import { SimAgent } from './agent-sim.js';
import type { TestEnv } from './helpers.js';
import { enrolledAgent, operator, testEnv, testService } from './helpers.js';

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let agent: SimAgent;
let other: SimAgent;
const MiB = 1 << 20;
const recordingQueues: FailoverQueues & { enqueued: string[] } = {
  enqueued: [],
  async enqueue(f) { recordingQueues.enqueued.push(f.id); },
  async enqueueJob(_host, _name, jobId) { recordingQueues.enqueued.push(jobId); },
  async close() {},
};

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  agent = new SimAgent(svc, await enrolledAgent(svc, 'acme', '*', 'hv1.acme.example'), 'web');
  other = new SimAgent(svc, await enrolledAgent(svc, 'acme', '*', 'hv1.acme.example'), 'db');
  await enrolledAgent(svc, 'globex', '*', 'hv1.globex.example');
}, 60_000);
afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

const events = async (tenant: string) => (await operator<{ events: { type: string; data: Record<string, unknown> }[] }>(svc, 'GET', `/v1/tenants/${tenant}/events?type=quota.reached`)).body.events;

describe('quotas', () => {
  it('refuses a new VM over the protected-VM quota, keeps the ones it has, and warns when lowered', async () => {
    const set = await operator<{ quotas: Record<string, unknown>; warnings: string[] }>(svc, 'PATCH', '/v1/tenants/acme', { quotas: { protectedVms: 1 } });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    expect(set.body.quotas).toEqual({ protectedVms: 1, replicaGb: null, concurrentTestFailovers: null });
    await agent.register([{ id: 'd0', virtualSize: 4 * MiB }]);
    const refused = await other.call('PUT', '/v1/vms/db', { disks: [{ id: 'd0', virtualSize: 4 * MiB, format: 'raw' }], frequency: '30s', history: 0, appConsistentEvery: 0, compression: 'zstd' });
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({ reason: 'quota_exceeded', message: 'tenant acme protects 1 VMs, its quota of protected VMs (1); unprotect one or ask the hoster for more' });
    expect(await events('acme')).toEqual([expect.objectContaining({ type: 'quota.reached', data: { quota: 'protectedVms', limit: 1, used: 1 } })]);
    // Lowered under what runs: the VM registers again, and the tenant is warned.
    const lowered = await operator<{ warnings: string[] }>(svc, 'PATCH', '/v1/tenants/acme', { quotas: { protectedVms: 0 } });
    expect(lowered.body.warnings).toEqual(['1 protected VMs over the quota of 0: they go on replicating; no new VM is taken']);
    const again = await agent.call('PUT', '/v1/vms/web', { disks: [{ id: 'd0', virtualSize: 4 * MiB, format: 'raw' }], frequency: '30s', history: 0, appConsistentEvery: 0, compression: 'zstd' });
    expect(again.status).toBe(200);
    const view = await operator<{ used: { protectedVms: number }; warnings: string[] }>(svc, 'GET', '/v1/tenants/acme/quotas');
    expect(view.body.used.protectedVms).toBe(1);
    expect(view.body.warnings).toHaveLength(1);
    const list = await operator<{ vms: { name: string; quotaWarnings: string[] }[] }>(svc, 'GET', '/v1/vms?tenant=acme');
    expect(list.body.vms.map((v) => [v.name, v.quotaWarnings])).toEqual([['web', view.body.warnings]]);
  });

  it('refuses a new replica\'s copy over the storage quota and takes the logs of one that replicates', async () => {
    await operator(svc, 'PATCH', '/v1/tenants/acme', { quotas: { replicaGb: 0.000001 } });
    const chunk = await agent.upload('d0', { kind: 'chunk', generation: 1, index: 0 }, Buffer.alloc(2000, 1));
    expect((await agent.call('POST', '/v1/vms/web/disks/d0/chunks', { generation: 1, index: 0, ...chunk })).status).toBe(202);
    const second = await agent.upload('d0', { kind: 'chunk', generation: 1, index: 1 }, Buffer.alloc(100, 1));
    const refused = await agent.call('POST', '/v1/vms/web/disks/d0/chunks', { generation: 1, index: 1, ...second });
    expect(refused.status).toBe(409);
    expect(refused.body.error?.message).toMatch(/^tenant acme holds 1\.95 KiB of replica storage, its quota 1000 B: a new replica's initial copy is refused/);
    // The same disk once its base is complete: its logs are taken over the quota.
    await svc.ctx.db.query(`UPDATE disks SET base_complete = true, state = 'replicating' WHERE tenant = 'acme' AND vm = 'web'`);
    expect((await agent.commitLog('d0', 1, Buffer.alloc(500, 2))).status).toBe('accepted');
    const q = await operator<{ warnings: string[] }>(svc, 'GET', '/v1/tenants/acme/quotas');
    expect(q.body.warnings.some((w) => w.startsWith('2.44 KiB of replica storage at or over the quota of 1000 B'))).toBe(true);
    await operator(svc, 'PATCH', '/v1/tenants/acme', { quotas: { replicaGb: null, protectedVms: null } });
  });

  it('refuses a test failover over the concurrent quota or the hardware plan; a real one goes ahead and says what it exceeded', async () => {
    const db = svc.ctx.db;
    await db.query(`INSERT INTO failover_hosts (name, cpus, memory_mib, storage_bytes) VALUES ('h1', 16, 65536, 1099511627776)`);
    await db.query(`INSERT INTO vm_hardware (tenant, vm, cpus, memory_mib) VALUES ('acme', 'web', 4, 8192)`);
    await db.query(`INSERT INTO recovery_points (tenant, vm, created_at, consistency, layer) VALUES ('acme', 'web', now(), 'crash', 'l')`);
    await operator(svc, 'PATCH', '/v1/tenants/acme', { quotas: { concurrentTestFailovers: 0 } });
    const req = { tenant: 'acme', vm: 'web', point: 'latest', requestedBy: 'test' };
    await expect(requestFailover(svc.ctx, recordingQueues, { ...req, kind: 'test' })).rejects.toThrow('tenant acme runs 0 test failovers, its quota of concurrent test failovers (0); stop one first');
    await operator(svc, 'PATCH', '/v1/tenants/acme', { quotas: { concurrentTestFailovers: null }, reservation: { cpus: 2, memoryMiB: 4096 } });
    await expect(requestFailover(svc.ctx, recordingQueues, { ...req, kind: 'test' })).rejects.toThrow(/^a test failover of web is refused: tenant acme's hardware plan reserves 2 vCPUs; 0 vCPUs in use and 4 vCPUs more would exceed it/);
    // Another tenant's reservation holds back what acme would take beyond its own.
    await operator(svc, 'PATCH', '/v1/tenants/globex', { reservation: { cpus: 15 } });
    const admission = await operator<{ fits: boolean; vms: { vm: string; host: string | null; problems: string[]; warnings: string[] }[] }>(svc, 'GET', '/v1/tenants/acme/admission?kind=test');
    expect(admission.body.fits).toBe(false);
    expect(admission.body.vms[0]!.problems).toEqual([
      'tenant acme\'s hardware plan reserves 2 vCPUs; 0 vCPUs in use and 4 vCPUs more would exceed it',
      'tenant acme\'s hardware plan reserves 4096 MiB of memory; 0 MiB of memory in use and 8192 MiB of memory more would exceed it',
      '2 vCPUs beyond tenant acme\'s own reservation would take capacity reserved for other tenants (1 vCPUs free and unreserved)',
    ]);
    const real = await operator<{ fits: boolean; vms: { host: string | null; warnings: string[] }[] }>(svc, 'GET', '/v1/tenants/acme/admission?kind=unplanned&vms=web');
    expect(real.body.fits).toBe(true);
    expect(real.body.vms[0]!.host).toBe('h1');
    expect(real.body.vms[0]!.warnings).toHaveLength(3);
    // In a disaster the real failover is placed, with the warnings in its report and an event.
    const { failover } = await requestFailover(svc.ctx, recordingQueues, { ...req, kind: 'unplanned' });
    expect(failover.host).toBe('h1');
    expect(failover.warnings.filter((w) => w.includes('a unplanned failover goes ahead where a host has room'))).toHaveLength(3);
    expect(recordingQueues.enqueued).toEqual([failover.id]);
    expect((await events('acme')).map((e) => e.data.quota)).toContain('hardwarePlan');
  });

  it('serves per-tenant and per-VM lag, pending bytes and failovers by state on /metrics', async () => {
    await svc.ctx.db.query(`UPDATE disks SET last_applied_at = now() - interval '120 seconds' WHERE tenant = 'acme' AND vm = 'web'`);
    const text = await (await fetch(`${svc.apiUrl}/metrics`)).text();
    const value = (line: string) => Number(new RegExp(`^${line.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1]);
    expect(value('lifeboat_replication_lag_seconds{tenant="acme",vm="web"}')).toBeGreaterThanOrEqual(120);
    expect(value('lifeboat_replication_lag_seconds{tenant="acme",vm="web"}')).toBeLessThan(3600);
    expect(value('lifeboat_tenant_replication_lag_seconds{tenant="acme"}')).toBeGreaterThanOrEqual(120);
    // The log committed above waits for a merge that this service does not run.
    expect(value('lifeboat_replication_pending_bytes{tenant="acme",vm="web"}')).toBe(500);
    expect(value('lifeboat_tenant_failovers{tenant="acme",kind="unplanned",state="requested"}')).toBe(1);
    // Labels come from the catalog only: a request for an unknown tenant adds none.
    await operator(svc, 'GET', '/v1/usage?tenant=made-up-name');
    expect(await (await fetch(`${svc.apiUrl}/metrics`)).text()).not.toContain('made-up-name');
  });

  it('shows another tenant none of it', async () => {
    const globex = await signApiToken(svc.ctx.signer, { role: 'tenant-admin', tenant: 'globex', sub: 'g' }, 60);
    for (const path of ['/v1/tenants/acme/quotas', '/v1/tenants/acme/admission', '/v1/tenants/acme/admission?kind=planned&vms=web']) {
      expect((await operator(svc, 'GET', path, undefined, globex)).status, path).toBe(404);
    }
    expect((await operator(svc, 'PATCH', '/v1/tenants/acme', { quotas: { protectedVms: 100 } }, globex)).status).toBe(403);
    expect((await operator(svc, 'GET', '/v1/tenants/globex/quotas', undefined, globex)).status).toBe(200);
    const viewer = await signApiToken(svc.ctx.signer, { role: 'tenant-viewer', tenant: 'acme', sub: 'v' }, 60);
    expect((await operator(svc, 'GET', '/v1/tenants/acme/admission?vms=nope', undefined, viewer)).status).toBe(404);
    expect((await operator(svc, 'GET', '/v1/tenants/acme/admission?kind=drill', undefined, viewer)).status).toBe(400);
    expect((await operator(svc, 'PATCH', '/v1/tenants/acme', { quotas: { protectedVms: -1 } })).status).toBe(400);
  });

  it('is set with lifeboat-service tenant set, and vm list warns of a quota exceeded', async () => {
    // Beside the service's own config: its paths are relative to the file.
    const config = join(dirname(env.config.path), 'quotas-cli.json');
    const file = JSON.parse(await readFile(env.config.path, 'utf8')) as { api: Record<string, unknown> };
    file.api = { ...file.api, host: '127.0.0.1', port: Number(new URL(svc.apiUrl).port) };
    await writeFile(config, JSON.stringify(file));
    const set = await runBin('service', ['tenant', 'set', 'acme', '--config', config, '--quota-protected-vms', '0', '--quota-replica-gb', '2.5', '--reserve-cpus', '8', '--reserve-memory-mib', 'none']);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toContain('  quotas: protected VMs 0, replica storage 2.5 GB, concurrent test failovers none\n');
    expect(set.stdout).toContain('  hardware plan: 8 vCPUs, none, none of overlay storage\n');
    expect(set.stdout).toContain('  warning: 1 protected VMs over the quota of 0: they go on replicating; no new VM is taken\n');
    const list = await runBin('service', ['vm', 'list', '--config', config, '--tenant', 'acme']);
    expect(list.stdout).toContain('warning: tenant acme: 1 protected VMs over the quota of 0');
    const bad = await runBin('service', ['tenant', 'set', 'acme', '--config', config, '--quota-replica-gb', 'lots']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr.trim()).toBe('lifeboat-service: --quota-replica-gb "lots": a number or "none"');
  }, 60_000);
});
