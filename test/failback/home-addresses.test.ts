/**
 * Home addresses through the real service (PostgreSQL catalog) and the real binary: each NIC's
 * normal configuration on the tenant's site (`home`) is validated as the production and test settings
 * are (a refusal is one 4xx line and stores nothing), names no DR network, shows in the NIC routes,
 * the CSV export and `failover plan-ip --home`, and another tenant's credentials get 404. The home
 * seed carries a new instance-id and the home network-config, read back with isoinfo.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveHomePlan, writeHomeSeed } from '../../service/failback/home.js';
import { validateVmNics } from '../../service/failover/network/settings.js';
import { refused as cliRefused } from '../cli-expect.js';
import type { CommandOutput } from '../helpers.js';
import { execFileP, referee, runBin, scratchDir } from '../helpers.js';
import type { HttpResult } from '../service/helpers.js';
import { FailoverScenario } from '../failover/failover-harness.js';

const mac1 = '52:54:00:00:00:01';
const mac2 = '52:54:00:00:00:02';
const home = { mode: 'static', addresses: ['192.168.10.7/24', '2001:db8:10::7/64'], gateway4: '192.168.10.1', gateway6: '2001:db8:10::1', dns: ['192.168.10.53'], search: ['corp.example'] };

let s: FailoverScenario;
let admin: string;
let viewer: string;
let other: string;
let config: string;

beforeAll(async () => {
  s = await FailoverScenario.start();
  const disk = join(s.env.dir, 'web1.vhdx');
  await referee('qemu-img', ['create', '-q', '-f', 'vhdx', disk, '4M']);
  await s.protect('web1', [disk]);
  await s.replicate();
  expect((await s.api('POST', '/v1/tenants', { name: 'globex' })).status).toBe(201);
  admin = await s.tenantToken('tenant-admin', 'acme');
  viewer = await s.tenantToken('tenant-viewer', 'acme');
  other = await s.tenantToken('tenant-admin', 'globex');
  config = await s.cliConfig();
}, 180_000);

afterAll(async () => {
  await s?.stop();
}, 120_000);

function refused(r: HttpResult<unknown>, status: number, pattern: RegExp): void {
  const body = r.body as { detail: string };
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(body.detail).not.toContain('\n');
  expect(body.detail).toMatch(pattern);
}

const nics = async () => (await s.api<{ nics: Record<string, unknown>[] }>('GET', '/v1/tenants/acme/vms/web1/nics')).body.nics;
const cli = (...args: string[]): Promise<CommandOutput> => runBin('service', [...args, '--config', config]);

describe('home settings of a NIC', () => {
  it('are stored beside production and test, normalised, and shown', async () => {
    const r = await s.api('PUT', `/v1/tenants/acme/vms/web1/nics/${mac1}`, { production: { mode: 'dhcp' }, home: { ...home, addresses: ['192.168.10.7/24', '2001:DB8:10:0::7/64'], search: ['Corp.Example'] } }, admin);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ mac: mac1, production: { mode: 'dhcp' }, home: { ...home, mode: 'static' } });
    expect((await nics()).find((n) => n.mac === mac1)).toMatchObject({ home });
  });

  it('are refused with one line naming the field, nothing stored', async () => {
    const before = await nics();
    refused(await s.api('PUT', `/v1/tenants/acme/vms/web1/nics/${mac1}`, { home: { ...home, gateway4: '10.0.0.1' } }, admin), 400,
      /^vm web1 nic 52:54:00:00:00:01 home\.gateway4: 10\.0\.0\.1 is off-link/);
    refused(await s.api('PUT', `/v1/tenants/acme/vms/web1/nics/${mac1}`, { home: { ...home, addresses: ['192.168.10.255/24'] , gateway6: undefined } }, admin), 400,
      /^vm web1 nic 52:54:00:00:00:01 home\.addresses\[0\]: 192\.168\.10\.255\/24 is the broadcast address/);
    refused(await s.api('PUT', `/v1/tenants/acme/vms/web1/nics/${mac1}`, { home: { mode: 'dhcp', network: 'dr-prod' } }, admin), 400,
      /^vm web1 nic 52:54:00:00:00:01 home\.network: home settings are the NIC's own site and name no DR network$/);
    refused(await s.api('PUT', `/v1/tenants/acme/vms/web1/nics/${mac1}`, { home: { mode: 'static', addresses: ['192.168.10.7/24'], bogus: 1 } }, admin), 400, /home: unknown field "bogus"/);
    // One home address on two NICs of the VM.
    refused(await s.api('PUT', '/v1/tenants/acme/vms/web1/nics', { nics: [{ mac: mac1, home }, { mac: mac2, home: { mode: 'static', addresses: ['192.168.10.7/24'] } }] }, admin), 400,
      /^vm web1 nic 52:54:00:00:00:02 home\.addresses\[0\]: 192\.168\.10\.7 is already used by nic 52:54:00:00:00:01 home\.addresses\[0\]$/);
    expect(await nics()).toEqual(before);
  });

  it('are written by the tenant\'s admins and the hoster only; another tenant gets 404', async () => {
    expect((await s.api('PUT', `/v1/tenants/acme/vms/web1/nics/${mac1}`, { home }, viewer)).status).toBe(403);
    refused(await s.api('PUT', `/v1/tenants/acme/vms/web1/nics/${mac1}`, { home }, other), 404, /./);
    refused(await s.api('GET', '/v1/tenants/acme/vms/web1/ip-plan?kind=home', undefined, other), 404, /./);
  });

  it('make the home plan (ip-plan?kind=home): explicit values, a NIC without home settings on DHCP', async () => {
    expect((await s.api('PUT', '/v1/tenants/acme/vms/web1/nics', { nics: [{ mac: mac1, production: { mode: 'dhcp' }, home }, { mac: mac2 }] }, admin)).status).toBe(200);
    const plan = await s.api<{ kind: string; nics: { mac: string; name: string; config: unknown; values: { field: string; from: string }[]; notes: string[] }[] }>('GET', '/v1/tenants/acme/vms/web1/ip-plan?kind=home', undefined, viewer);
    expect(plan.status).toBe(200);
    expect(plan.body.kind).toBe('home');
    expect(plan.body.nics[0]).toMatchObject({ mac: mac1, name: 'dr0', config: home });
    expect(plan.body.nics[0]!.values.every((v) => v.from === 'explicit')).toBe(true);
    expect(plan.body.nics[1]).toMatchObject({ mac: mac2, name: 'dr1', config: { mode: 'dhcp' }, notes: ['no home settings recorded: the NIC asks DHCP at home'] });
  });

  it('travel in the CSV export and import', async () => {
    const imported = await s.api('POST', '/v1/tenants/acme/nic-settings/import', { csv: `vm,mac,kind,addresses,gateway,dns,network\nweb1,${mac2},home,192.168.10.9/24,192.168.10.1,,\n` }, admin);
    expect(imported.status, JSON.stringify(imported.body)).toBe(200);
    expect((await nics()).find((n) => n.mac === mac2)).toMatchObject({ home: { mode: 'static', addresses: ['192.168.10.9/24'], gateway4: '192.168.10.1' } });
    const bad = await s.api<{ rows: { line: number; message: string }[] }>('POST', '/v1/tenants/acme/nic-settings/import', { csv: `vm,mac,kind,addresses,gateway,dns,network\nweb1,${mac2},home,192.168.10.9/24,,,dr-prod\n` }, admin);
    expect(bad.status).toBe(400);
    expect(bad.body.rows).toEqual([{ line: 2, message: "vm web1 nic 52:54:00:00:00:02 home.network: home settings are the NIC's own site and name no DR network" }]);
    const csv = await s.api<{ csv: string }>('GET', '/v1/tenants/acme/nic-settings/export');
    expect(csv.status).toBe(200);
    expect(csv.body.csv).toContain(`web1,${mac1},home,192.168.10.7/24 2001:db8:10::7/64,192.168.10.1 2001:db8:10::1,192.168.10.53,,corp.example,,virtio`);
  });

  it('are set and shown by the CLI; a mistake is one line', async () => {
    const set = await cli('vm', 'nic', 'set', 'web1', '--tenant', 'acme', '--mac', mac2, '--home', '--ip', '192.168.10.8/24', '--gateway', '192.168.10.1', '--dns', '192.168.10.53', '--json');
    expect(set.code, set.stderr).toBe(0);
    expect(JSON.parse(set.stdout)).toMatchObject({ mac: mac2, home: { mode: 'static', addresses: ['192.168.10.8/24'], gateway4: '192.168.10.1' } });
    const list = await cli('vm', 'nic', 'list', 'web1', '--tenant', 'acme');
    expect(list.stdout).toContain('  home        192.168.10.8/24  gw 192.168.10.1  dns 192.168.10.53');
    const plan = await cli('failover', 'plan-ip', 'web1', '--tenant', 'acme', '--home');
    expect(plan.stdout).toContain('nic 52:54:00:00:00:02 (dr1): static');
    await cliRefused(cli('vm', 'nic', 'set', 'web1', '--tenant', 'acme', '--mac', mac2, '--home', '--test', '--dhcp'), /give one of --production, --test or --home \(got --test and --home\)/);
    await cliRefused(cli('vm', 'nic', 'set', 'web1', '--tenant', 'acme', '--mac', mac2, '--home', '--dhcp', '--network', 'dr-prod'), /home\.network: home settings are the NIC's own site/);
  }, 600_000);
});

describe('the home seed', () => {
  it('holds a new instance-id each time and the home network-config, read back by isoinfo', async () => {
    const dir = await scratchDir('lifeboat-homeseed-');
    try {
      const plan = resolveHomePlan(validateVmNics([{ mac: mac1, production: { mode: 'dhcp' }, home }, { mac: mac2 }]));
      const a = await writeHomeSeed(dir.path, 'web_1', plan, 'fb1');
      const meta = (await execFileP('isoinfo', ['-R', '-x', '/meta-data', '-i', a.path])).stdout;
      expect(meta).toContain(`instance-id: "${a.instanceId}"`);
      expect(meta).toContain('local-hostname: "web-1"');
      expect(a.instanceId).toMatch(/^lifeboat-home-fb1-/);
      const net = (await execFileP('isoinfo', ['-R', '-x', '/network-config', '-i', a.path])).stdout;
      expect(net).toContain('"192.168.10.7/24"');
      expect(net).toContain('gateway6: "2001:db8:10::1"');
      expect(net).toContain('"corp.example"');
      expect(net).not.toMatch(/production|dr-prod/);
      const b = await writeHomeSeed(dir.path, 'web_1', plan, 'fb1');
      expect(b.instanceId).not.toBe(a.instanceId);
    } finally {
      await dir.remove();
    }
  });
});
