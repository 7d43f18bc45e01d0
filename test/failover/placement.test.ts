/**
 * Placement by what a failover needs of its host, with two registered failover hosts: the scenario's
 * own (in-process, 32 vCPUs, 32 GiB, no networks of its own listed) and `spare`, a registered row whose
 * queue nothing consumes (enough to see the choice). DR networks: dr-prod-1 and dr-test-1 carried by
 * spare alone, dr-prod-2 by every host (spare's own list leaves it out), dr-prod-9 by a host that is
 * not running. A failover goes to a host that reaches every network its NICs attach to (production
 * settings for a real failover, test settings for a test one) and has room for its vCPUs, memory and
 * overlay storage; a refusal is one 503 naming the requirement no host met, and changes nothing.
 */
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { upsertHost } from '../../service/catalog/failovers.js';
import { failoverQueueName } from '../../service/failover/queue.js';
import type { FailoverReport } from '../../service/failover/report.js';
import { referee } from '../helpers.js';
import { FailoverScenario, must, qemuAvailable } from './failover-harness.js';

const hasQemu = qemuAvailable('the placement tests');
const MiB = 2 ** 20;
const mac = '52:54:00:00:0a:01';
const unreachable = { kind: 'console', pattern: 'never-printed' };

describe.skipIf(!hasQemu)('failover placement', () => {
  let s: FailoverScenario;
  let local: string;
  let redis: Redis;

  /** Registers (or refreshes) the spare host: its heartbeat is now. */
  const spare = (cap: { cpus?: number; memoryMiB?: number; storageBytes?: number } = {}) => upsertHost(s.svc.ctx.db, {
    name: 'spare', cpus: cap.cpus ?? 4, memoryMiB: cap.memoryMiB ?? 4096, storageBytes: cap.storageBytes ?? 64 * MiB, networks: ['dr-prod-1', 'dr-test-1'], pid: null,
  });
  const nic = async (production: string | undefined, test: string | undefined) => {
    const r = await s.api('PUT', `/v1/tenants/acme/vms/db01/nics/${mac}`, {
      production: { mode: 'dhcp', ...(production ? { network: production } : {}) }, test: { mode: 'dhcp', ...(test ? { network: test } : {}) },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
  };
  const hardware = async (cpus: number) => expect((await s.api('PUT', '/v1/tenants/acme/vms/db01/hardware', { firmware: 'bios', cpus, memoryMiB: 128, guestOs: 'other', readyProbes: [unreachable] })).status).toBe(200);
  const request = (kind: 'test' | 'unplanned') => s.api<FailoverReport & { code: string; detail: string }>('POST', '/v1/tenants/acme/vms/db01/failovers', { kind, point: 'latest' });
  /** What a refusal must leave as it was: failovers, their steps, pins, and the jobs on both queues. */
  const snapshot = async () => {
    const db = s.svc.ctx.db;
    const jobs: Record<string, unknown> = {};
    for (const host of ['spare', local]) {
      const q = new Queue(failoverQueueName(host), { connection: redis });
      jobs[host] = await q.getJobCounts('wait', 'active', 'delayed', 'prioritized', 'completed', 'failed');
      await q.close();
    }
    return {
      failovers: await db.query('SELECT id, state, goal, host FROM failovers ORDER BY id'),
      steps: (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM failover_steps'))[0]!.n,
      pins: await db.query('SELECT * FROM point_pins'),
      jobs,
    };
  };
  /** Ends a failover placed on spare (nothing runs it there; it prepared nothing). */
  const endOnSpare = async (id: string) => {
    await s.svc.ctx.db.query(`UPDATE failovers SET goal = 'stopped', state = 'stopped', ended_at = now() WHERE id = $1 AND host = 'spare' AND state = 'requested'`, [id]);
  };

  beforeAll(async () => {
    s = await FailoverScenario.start();
    local = s.svc.ctx.config.failover.host.name;
    redis = new Redis(s.env.config.redis.url, { maxRetriesPerRequest: null });
    const disk = join(s.env.dir, 'db01.vhdx');
    await referee('qemu-img', ['create', '-q', '-f', 'vhdx', disk, '16M']);
    await referee('qemu-io', ['-c', 'write -P 0x5a 0 1M', disk]);
    await s.protect('db01', [disk]);
    await s.replicate();
    await hardware(1);
    for (const [name, kind, hosts] of [['dr-prod-1', 'production', ['spare']], ['dr-prod-2', 'production', []], ['dr-prod-9', 'production', ['fo-gone']], ['dr-test-1', 'test', ['spare']]] as const) {
      must(await s.api('POST', '/v1/networks', { name, kind, bridge: `br-${name.slice(3)}`, hosts }), `network ${name}`);
      must(await s.api('POST', `/v1/networks/${name}/grants`, { tenant: 'acme' }), `grant ${name}`);
    }
    await spare();
  }, 120_000);

  afterAll(async () => {
    redis?.disconnect();
    await s?.stop();
  }, 120_000);

  it('puts a failover on the host that reaches its NICs\' network, though another has more room', async () => {
    await spare();
    await nic('dr-prod-1', undefined);
    const real = await request('unplanned');
    expect(real.status, JSON.stringify(real.body)).toBe(202);
    expect(real.body.host).toBe('spare');
    // A test failover's NIC names no test network: its run's isolated network, which every host can
    // make, so the host with the most free memory (the scenario's own) takes it.
    const test = await request('test');
    expect(test.status, JSON.stringify(test.body)).toBe(202);
    expect(test.body.host).toBe(local);
    must(await s.api('POST', `/v1/failovers/${test.body.id}/stop`, {}), 'stop');
    await s.waitFor(test.body.id, (r) => r.endedAt !== null, 120_000);
    await endOnSpare(real.body.id);
    // A test failover whose test settings name a test network goes where that network is.
    await nic('dr-prod-2', 'dr-test-1');
    const onTestNet = await request('test');
    expect(onTestNet.status, JSON.stringify(onTestNet.body)).toBe(202);
    expect(onTestNet.body.host).toBe('spare');
    await endOnSpare(onTestNet.body.id);
    // dr-prod-2 names no hosts, but spare's own list leaves it out: the scenario's host.
    const other = await request('unplanned');
    expect(other.status, JSON.stringify(other.body)).toBe(202);
    expect(other.body.host).toBe(local);
    must(await s.api('POST', `/v1/failovers/${other.body.id}/revert`, {}), 'revert');
    await s.waitFor(other.body.id, (r) => r.endedAt !== null, 120_000);
  }, 300_000);

  it('refuses clearly when no live host reaches the network, and changes nothing', async () => {
    await spare();
    await nic('dr-prod-9', undefined);
    const before = await snapshot();
    const r = await request('unplanned');
    expect(r.status, JSON.stringify(r.body)).toBe(503);
    expect(r.body.detail).toBe(`no failover host reaches network dr-prod-9 (live hosts: ${['spare', local].sort().join(', ')}; the network names host fo-gone)`);
    expect(await snapshot()).toEqual(before);
    // A host that stopped heartbeating is not offered the failover: spare alone carries dr-prod-1.
    await nic('dr-prod-1', undefined);
    await s.svc.ctx.db.query(`UPDATE failover_hosts SET heartbeat_at = now() - interval '10 minutes' WHERE name = 'spare'`);
    const stale = await request('unplanned');
    expect(stale.status, JSON.stringify(stale.body)).toBe(503);
    expect(stale.body.detail).toBe(`no failover host reaches network dr-prod-1 (live hosts: ${local}; the network names host spare)`);
    expect(await snapshot()).toEqual(before);
  });

  it('refuses clearly when the hosts that reach the network have no room, naming what is short', async () => {
    await nic('dr-prod-1', 'dr-test-1');
    await hardware(8);
    await spare({ cpus: 4 });
    const before = await snapshot();
    const cpus = await request('unplanned');
    expect(cpus.status, JSON.stringify(cpus.body)).toBe(503);
    expect(cpus.body.detail).toBe('no failover host that reaches dr-prod-1 has room for 8 vCPUs and 128 MiB beside the failovers already placed on it (free: spare: 4 of 4 vCPUs, 4096 of 4096 MiB)');
    expect(await snapshot()).toEqual(before);
    // Overlay storage: each failover reserves its disks' virtual size (16 MiB) on its host.
    await hardware(1);
    await spare({ storageBytes: 24 * MiB });
    const first = await request('test');
    expect(first.status, JSON.stringify(first.body)).toBe(202);
    expect(first.body.host).toBe('spare');
    const mid = await snapshot();
    const second = await request('test');
    expect(second.status, JSON.stringify(second.body)).toBe(503);
    expect(second.body.detail).toBe('no failover host that reaches dr-test-1 has room for 16.0 MiB of overlay storage (the virtual size of the VM\'s disks) beside the failovers already placed on it (free: spare: 8.00 MiB of 24.0 MiB overlay storage)');
    expect(await snapshot()).toEqual(mid);
    await endOnSpare(first.body.id);
    expect((await request('test')).body.host).toBe('spare');
    await s.svc.ctx.db.query(`UPDATE failovers SET goal = 'stopped', state = 'stopped', ended_at = now() WHERE host = 'spare' AND ended_at IS NULL`);
  });

  it('says which networks each host reaches when none reaches them all', async () => {
    await spare();
    await hardware(1);
    // Two NICs: one on dr-prod-1 (spare only), one on dr-prod-2 (not spare).
    must(await s.api('PUT', '/v1/tenants/acme/vms/db01/nics', {
      nics: [{ mac, production: { mode: 'dhcp', network: 'dr-prod-1' } }, { mac: '52:54:00:00:0a:02', production: { mode: 'dhcp', network: 'dr-prod-2' } }],
    }), 'nics');
    const before = await snapshot();
    const r = await request('unplanned');
    expect(r.status, JSON.stringify(r.body)).toBe(503);
    const each = [['spare', 'dr-prod-1'], [local, 'dr-prod-2']].sort((a, b) => a[0]!.localeCompare(b[0]!)).map(([h, n]) => `${h} reaches ${n}`).join('; ');
    expect(r.body.detail).toBe(`no failover host reaches every network the VM's NICs attach to (dr-prod-1, dr-prod-2): ${each}`);
    expect(await snapshot()).toEqual(before);
  });
});
