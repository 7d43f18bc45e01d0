/**
 * Public addresses through the failover engine: the service (real PostgreSQL catalog, Redis, the
 * embedded failover host with the real qemu driver) applies its nftables in a router namespace this
 * test makes (failover.publicIps.netns), where a VM stand-in holds the DR address: the table appears
 * when the VM starts and goes when it stops; a test failover gets none unless its mapping asks; a
 * mapping changed while the VM runs, or a table lost, is set right by the host's tick, without a second
 * table; the drill report lists what was applied and removed. The VM is a data disk with nothing to
 * boot (ready never comes): what is tested is the host's side, and the stand-in answers the traffic.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FailoverReport } from '../../service/failover/report.js';
import { referee } from '../helpers.js';
import { FailoverScenario, must, qemuAvailable } from './failover-harness.js';
import { Answered, Client4, Namespaces, netnsUnavailable } from './public-ip-netns.js';

const why = netnsUnavailable() ?? (qemuAvailable('the public address failover tests') ? undefined : 'qemu is not installed');
if (why && process.env.CI) throw new Error(`public address failover tests cannot run: ${why}`);

const mac = '52:54:00:00:00:01';
const Public4 = '203.0.113.10';

describe.skipIf(why !== undefined)('public addresses through the failover engine', () => {
  let ns: Namespaces;
  let s: FailoverScenario;

  beforeAll(async () => {
    ns = Namespaces.make();
    // The stand-in holds the test plan's address (192.0.2.10) and the production plan's (192.0.2.20).
    ns.exec(ns.vm, ['ip', 'addr', 'add', '192.0.2.20/24', 'dev', 'v0']);
    await ns.serve(ns.vm, 'vm', [80, 443]);
    s = await FailoverScenario.start({ configure: (f) => { f.publicIps = { netns: ns.router, uplink: 'up0' }; } });
    const disk = join(s.env.dir, 'db01.vhdx');
    await referee('qemu-img', ['create', '-q', '-f', 'vhdx', disk, '16M']);
    await s.protect('db01', [disk]);
    await s.replicate();
    must(await s.api('PUT', '/v1/tenants/acme/vms/db01/hardware', { firmware: 'bios', cpus: 1, memoryMiB: 128, guestOs: 'other', readyProbes: [{ kind: 'console', pattern: 'never-printed' }] }), 'hardware');
    must(await s.api('PUT', '/v1/tenants/acme/vms/db01/nics', { nics: [{ mac,
      production: { mode: 'static', addresses: ['192.0.2.20/24'], gateway4: '192.0.2.1' },
      test: { mode: 'static', addresses: ['192.0.2.10/24'], gateway4: '192.0.2.1' } }] }), 'nics');
    must(await s.api('POST', '/v1/public-ip-pools', { name: 'edge', addresses: [Public4] }), 'pool');
    must(await s.api('POST', '/v1/public-ip-pools/edge/grants', { tenant: 'acme', count: 1 }), 'grant');
    must(await s.api('POST', '/v1/tenants/acme/public-ip-mappings', { address: Public4, vm: 'db01', mac, allow: ['tcp/80'] }), 'map');
  }, 300_000);

  afterAll(async () => {
    try {
      // VMs outlive the service: a test that failed half-way leaves its failover to be ended here.
      for (const f of s ? (await s.api<{ failovers: FailoverReport[] }>('GET', '/v1/failovers?active=true')).body.failovers : []) await end(f);
      await s?.stop();
    } finally {
      ns?.remove();
    }
  }, 600_000);

  const start = async (kind: 'test' | 'unplanned') => {
    const r = must(await s.api('POST', '/v1/tenants/acme/vms/db01/failovers', { kind, point: 'latest' }), `${kind} failover`);
    return s.waitFor(r.body.id, (x) => x.steps.some((st) => st.step === 'public-ips'), 300_000);
  };
  const end = async (f: FailoverReport) => {
    must(await s.api('POST', `/v1/failovers/${f.id}/${f.kind === 'test' ? 'stop' : 'revert'}`, {}), 'end');
    return s.waitFor(f.id, (x) => x.endedAt !== null, 300_000);
  };
  const steps = (f: FailoverReport) => f.steps.filter((st) => st.step === 'public-ips').map((st) => `${st.status}: ${st.detail}`);
  const tableOf = (f: FailoverReport) => `lifeboat_${f.id.replace(/-/g, '_')}`;
  const rules = (f: FailoverReport) => ns.exec(ns.router, ['nft', 'list', 'table', 'inet', tableOf(f)]);

  it('gives a test failover no public address while its mapping does not ask for one', async () => {
    const f = await start('test');
    expect(steps(f)).toEqual(['skipped: 1 mapping(s) of db01 are for real failovers only (test: false)']);
    expect(f.publicIps).toEqual([]);
    expect(ns.tables(ns.router)).toEqual([]);
    await s.svc.failoverHost!.tick();
    expect(ns.tables(ns.router)).toEqual([]);
    const ended = await end(f);
    expect(ended.publicIps).toEqual([]);
    expect(ns.connect(ns.client, 'tcp', Public4, 80)).toMatchObject({ ok: false });
  }, 600_000);

  it('applies a real failover\'s table when its VM starts, keeps it right while it runs, and removes it at revert', async () => {
    const f = await start('unplanned');
    expect(steps(f)).toEqual([`done: nftables table ${tableOf(f)}: ${Public4} → 192.0.2.20 (tcp/80)`]);
    expect(f.publicIps).toMatchObject([{ address: Public4, drAddress: '192.0.2.20', mac, allow: ['tcp/80'], removedAt: null }]);
    expect(ns.tables(ns.router)).toEqual([tableOf(f)]);
    expect(rules(f)).toContain(`iifname "up0" ip daddr ${Public4} tcp dport 80 dnat ip to 192.0.2.20`);
    expect(ns.connect(ns.client, 'tcp', Public4, 80, Answered)).toEqual({ ok: true, text: `vm ${Client4}` });
    expect(ns.connect(ns.client, 'tcp', Public4, 443)).toEqual({ ok: false, error: 'no answer' });

    // The tick changes nothing that is right: still one table, one rule, no new step.
    await s.svc.failoverHost!.tick();
    await s.svc.failoverHost!.tick();
    expect(ns.tables(ns.router)).toEqual([tableOf(f)]);
    expect(rules(f).match(/dnat ip to/g)).toHaveLength(1);

    // A mapping changed while the VM runs is applied by the next tick, in place.
    must(await s.api('PUT', `/v1/tenants/acme/public-ip-mappings/${Public4}`, { vm: 'db01', mac, allow: ['tcp/80', 'tcp/443'] }), 'change');
    await s.svc.failoverHost!.tick();
    expect(ns.tables(ns.router)).toEqual([tableOf(f)]);
    expect(ns.connect(ns.client, 'tcp', Public4, 443, Answered)).toEqual({ ok: true, text: `vm ${Client4}` });
    let now = must(await s.api('GET', `/v1/failovers/${f.id}`), 'report').body;
    expect(now.publicIps).toMatchObject([{ address: Public4, allow: ['tcp/80', 'tcp/443'], removedAt: null }]);
    expect(steps(now)).toHaveLength(2);

    // A table lost on the host (deleted by hand) comes back at the next tick.
    ns.exec(ns.router, ['nft', 'delete', 'table', 'inet', tableOf(f)]);
    await s.svc.failoverHost!.tick();
    expect(ns.tables(ns.router)).toEqual([tableOf(f)]);
    expect(ns.connect(ns.client, 'tcp', Public4, 80, Answered)).toEqual({ ok: true, text: `vm ${Client4}` });

    const ended = await end(f);
    expect(ended.state).toBe('reverted');
    expect(ended.publicIps).toHaveLength(1);
    expect(ended.publicIps[0]!.removedAt).not.toBeNull();
    expect(steps(ended).at(-1)).toBe(`done: nftables table ${tableOf(f)} removed: ${Public4} released`);
    expect(ns.exec(ns.router, ['nft', 'list', 'ruleset']).trim()).toBe('');
    expect(ns.connect(ns.client, 'tcp', Public4, 80)).toMatchObject({ ok: false });
    await s.svc.failoverHost!.tick();
    expect(ns.tables(ns.router)).toEqual([]);
    now = must(await s.api('GET', `/v1/failovers/${f.id}`), 'report').body;
    expect(now.publicIps[0]!.removedAt).not.toBeNull();
  }, 600_000);

  it('gives a test failover its public address when the mapping asks, on the test plan\'s address', async () => {
    must(await s.api('PUT', `/v1/tenants/acme/public-ip-mappings/${Public4}`, { vm: 'db01', mac, allow: ['tcp/80'], test: true }), 'ask');
    const f = await start('test');
    expect(steps(f)[0]).toMatch(new RegExp(`^done: nftables table ${tableOf(f)}: ${Public4.replace(/\./g, '\\.')} → 192\\.0\\.2\\.10 \\(tcp/80\\); a test failover's NICs are on its run's isolated network`));
    expect(f.warnings.some((w) => w.startsWith('a test failover\'s NICs are on its run\'s isolated network'))).toBe(true);
    expect(ns.tables(ns.router)).toEqual([tableOf(f)]);
    expect(rules(f)).toContain('dnat ip to 192.0.2.10');
    // The stand-in holds the test address too, so the rules carry the traffic there.
    expect(ns.connect(ns.client, 'tcp', Public4, 80, Answered)).toEqual({ ok: true, text: `vm ${Client4}` });
    const ended = await end(f);
    expect(ended.publicIps).toMatchObject([{ address: Public4, drAddress: '192.0.2.10', allow: ['tcp/80'] }]);
    expect(ended.publicIps[0]!.removedAt).not.toBeNull();
    expect(ns.tables(ns.router)).toEqual([]);
  }, 600_000);
});
