/**
 * The failover network API with the real service and PostgreSQL catalog: DR networks are the
 * hoster's and granted to tenants, NIC settings and mappings are validated whole before anything is
 * stored (each refusal one 4xx line, the catalog unchanged), the IP plan shows each value's origin and
 * refuses conflicts, CSV imports apply every row or none. Every tenant-scoped route answers another
 * tenant 404 (as if absent) and a viewer 403 on writes.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LifeboatError } from '../../shared/errors.js';
import { listVmNics } from '../../service/catalog/failovers.js';
import type { NicModel } from '../../service/failover/drivers/types.js';
import type { NicPlan } from '../../service/failover/network/mappings.js';
import { networkInputs, planVmIp, writeSeeds } from '../../service/failover/seed.js';
import type { FailoverSpec } from '../../service/failover/spec.js';
import { referee } from '../helpers.js';
import type { HttpResult } from '../service/helpers.js';
import { FailoverScenario } from './failover-harness.js';

type ErrorBody = { code: string; detail: string; rows?: { line: number; message: string }[] };
const mac1 = '52:54:00:00:00:01';
const mac2 = '52:54:00:00:00:02';
const prod = { mode: 'static', addresses: ['10.20.30.40/24', '2001:db8::40/64'], gateway4: '10.20.30.1', dns: ['10.20.30.2'], network: 'dr-prod' };

let s: FailoverScenario;
let admin: string;
let viewer: string;
let other: string;

beforeAll(async () => {
  s = await FailoverScenario.start();
  for (const vm of ['web1', 'web2']) {
    const disk = join(s.env.dir, `${vm}.vhdx`);
    await referee('qemu-img', ['create', '-q', '-f', 'vhdx', disk, '4M']);
    await s.protect(vm, [disk]);
  }
  await s.replicate();
  expect((await s.api('POST', '/v1/tenants', { name: 'globex' })).status).toBe(201);
  admin = await s.tenantToken('tenant-admin', 'acme');
  viewer = await s.tenantToken('tenant-viewer', 'acme');
  other = await s.tenantToken('tenant-admin', 'globex');
}, 180_000);

afterAll(async () => {
  await s?.stop();
}, 120_000);

/** A refusal: the status, and one line naming what is wrong. */
function refused(r: HttpResult<unknown>, status: number, pattern: RegExp): void {
  const body = r.body as ErrorBody;
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(body.detail).not.toContain('\n');
  expect(body.detail).toMatch(pattern);
}

const nicsOf = async (vm: string) => (await s.api<{ nics: unknown[] }>('GET', `/v1/tenants/acme/vms/${vm}/nics`)).body.nics;

describe('DR networks', () => {
  it('are created and granted by the hoster only; a tenant sees the names and kinds of its grants', async () => {
    expect((await s.api('POST', '/v1/networks', { name: 'dr-prod', kind: 'production', bridge: 'br-dr0', vlan: 120, hosts: ['fo1'] })).status).toBe(201);
    expect((await s.api('POST', '/v1/networks', { name: 'dr-test', kind: 'test', bridge: 'br-dr1' })).status).toBe(201);
    expect((await s.api('POST', '/v1/networks', { name: 'mgmt', kind: 'production', bridge: 'br-mgmt' })).status).toBe(201);
    refused(await s.api('POST', '/v1/networks', { name: 'dr-prod', bridge: 'br9' }), 409, /^network dr-prod already exists$/);
    for (const name of ['dr;reboot', 'dr$(id)', "dr'x", 'dr`id`', 'dr x', 'dr|x', 'dr&x', '$env:PATH', '']) {
      refused(await s.api('POST', '/v1/networks', { name, bridge: 'br-x' }), 400, /^(body\.)?name\b/);
    }
    refused(await s.api('POST', '/v1/networks', { name: 'x1', bridge: 'br0;ls' }), 400, /^bridge must be a Linux bridge name/);
    refused(await s.api('POST', '/v1/networks', { name: 'x1', bridge: 'br0', vlan: 5000 }), 400, /^vlan\b/);
    expect((await s.api('POST', '/v1/networks', { name: 'gone', kind: 'test', bridge: 'br-gone' })).status).toBe(201);
    expect((await s.api('DELETE', '/v1/networks/gone', undefined, admin)).status).toBe(403);
    expect((await s.api('DELETE', '/v1/networks/gone')).body).toEqual({ deleted: 'gone' });
    refused(await s.api('DELETE', '/v1/networks/gone'), 404, /^no network gone$/);
    expect((await s.api<{ networks: { name: string }[] }>('GET', '/v1/networks')).body.networks.map((n) => n.name)).toEqual(['dr-prod', 'dr-test', 'mgmt']);

    expect((await s.api('POST', '/v1/networks/dr-prod/grants', { tenant: 'acme' })).status).toBe(201);
    expect((await s.api('POST', '/v1/networks/dr-prod/grants', { tenant: 'acme' })).status).toBe(200);
    expect((await s.api('POST', '/v1/networks/dr-test/grants', { tenant: 'acme' })).status).toBe(201);
    refused(await s.api('POST', '/v1/networks/dr-prod/grants', { tenant: 'nobody' }), 404, /^no tenant nobody$/);
    refused(await s.api('POST', '/v1/networks/nope/grants', { tenant: 'acme' }), 404, /^no network nope$/);
    refused(await s.api('DELETE', '/v1/networks/dr-prod'), 409, /^network dr-prod is granted to tenant acme: revoke the grants first$/);

    for (const token of [admin, viewer, other]) {
      expect((await s.api('GET', '/v1/networks', undefined, token)).status).toBe(403);
      expect((await s.api('POST', '/v1/networks', { name: 'mine', bridge: 'br-mine' }, token)).status).toBe(403);
      expect((await s.api('POST', '/v1/networks/mgmt/grants', { tenant: 'acme' }, token)).status).toBe(403);
    }
    const mine = await s.api<{ networks: unknown[] }>('GET', '/v1/tenants/acme/networks', undefined, viewer);
    expect(mine.body.networks).toEqual([{ name: 'dr-prod', kind: 'production' }, { name: 'dr-test', kind: 'test' }]);
    expect((await s.api('GET', '/v1/tenants/acme/networks', undefined, other)).status).toBe(404);
    expect((await s.api<{ networks: unknown[] }>('GET', '/v1/tenants/globex/networks', undefined, other)).body.networks).toEqual([]);
  });
});

describe('NIC settings', () => {
  it('are stored normalised when valid, for the hoster and the tenant admin', async () => {
    const r = await s.api('PUT', `/v1/tenants/acme/vms/web1/nics/52-54-00-00-00-01`, { production: prod, model: 'e1000' }, admin);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toEqual({ mac: mac1, position: 0, model: 'e1000', production: { ...prod, search: [] }, reportedAddresses: [], source: 'operator', agentAddresses: [], etag: expect.stringMatching(/^"[\w-]{22}"$/) });
    const t = await s.api('PUT', `/v1/tenants/acme/vms/web1/nics/${mac1}`, { production: prod, model: 'e1000', test: { mode: 'dhcp', network: 'dr-test' } });
    expect(t.status, JSON.stringify(t.body)).toBe(200);
    expect(await nicsOf('web1')).toHaveLength(1);
  });

  it.each([
    ['a malformed IP', { production: { ...prod, addresses: ['10.20.30.400/24'] } }, /^vm web1 nic 52:54:00:00:00:09 production\.addresses\[0\]: 10\.20\.30\.400 is not an IP address$/],
    ['a prefix out of range', { production: { ...prod, addresses: ['10.20.30.41/33'] } }, /production\.addresses\[0\]: 10\.20\.30\.41\/33: prefix \/33 is out of range 1\.\.32$/],
    ['an off-link gateway', { production: { ...prod, addresses: ['10.20.30.41/24'], gateway4: '10.20.31.1' } }, /production\.gateway4: 10\.20\.31\.1 is off-link/],
    ['a network name with shell metacharacters', { production: { mode: 'dhcp', network: 'dr-prod;reboot' } }, /production\.network: network name "dr-prod;reboot" may hold only/],
    ['a network name with PowerShell metacharacters', { test: { mode: 'dhcp', network: '$(Stop-Computer)' } }, /test\.network: network name "\$\(Stop-Computer\)" must start with a letter or digit/],
    ['a network not granted to the tenant', { production: { mode: 'dhcp', network: 'mgmt' } }, /production\.network: no network mgmt is granted to tenant acme$/],
    ['a network of the other kind', { test: { mode: 'dhcp', network: 'dr-prod' } }, /test\.network: network dr-prod is a production network; test settings need a test network$/],
    ['an address another VM holds in the network', { production: { ...prod } }, /production\.addresses\[0\]: 10\.20\.30\.40 in network dr-prod is already used by vm web1 nic 52:54:00:00:00:01 \(production\)$/],
    ['2,000 addresses', { production: { mode: 'static', addresses: Array.from({ length: 2000 }, (_, i) => `10.${i >> 8}.${i & 255}.9/8`) } }, /production\.addresses: at most 32 addresses per NIC \(got 2000\)$/],
    ['an unknown model', { model: 'ne2000' }, /^model\b/],
  ])('refuses %s with one line and stores nothing', async (_what, body, pattern) => {
    const vm = _what.startsWith('an address another') ? 'web2' : 'web1';
    const before = { web1: await nicsOf('web1'), web2: await nicsOf('web2') };
    const r = await s.api('PUT', `/v1/tenants/acme/vms/${vm}/nics/52:54:00:00:00:09`, body, admin);
    refused(r, 400, vm === 'web2' ? new RegExp(pattern.source.replace('^vm web1', '^vm web2')) : pattern);
    expect({ web1: await nicsOf('web1'), web2: await nicsOf('web2') }).toEqual(before);
  });

  it('refuses duplicate MACs, bad MACs and VM names with quotes', async () => {
    refused(await s.api('PUT', '/v1/tenants/acme/vms/web2/nics', { nics: [{ mac: mac2 }, { mac: '52-54-00-00-00-02' }] }), 400, /^vm web2 nic 52:54:00:00:00:02 mac: 52:54:00:00:00:02 is already the MAC of the NIC at position 0$/);
    refused(await s.api('PUT', '/v1/tenants/acme/vms/web2/nics/01:00:5e:00:00:01', {}), 400, /^mac: 01:00:5e:00:00:01 is a multicast MAC address/);
    refused(await s.api('PUT', '/v1/tenants/acme/vms/web2/nics/zz', {}), 400, /^mac: "zz" is not a MAC address/);
    refused(await s.api('PUT', `/v1/tenants/acme/vms/we'b/nics/${mac2}`, {}), 400, /^vm "we'b" is not a valid id/);
    refused(await s.api('PUT', `/v1/tenants/acme/vms/${encodeURIComponent('web"1')}/nics/${mac2}`, {}), 400, /^vm "web\\"1" is not a valid id/);
    expect(await nicsOf('web2')).toEqual([]);
  });

  it('answers another tenant 404 and a viewer 403 on writes', async () => {
    const paths = ['/v1/tenants/acme/vms/web1/nics', `/v1/tenants/acme/vms/web1/nics/${mac1}`, '/v1/tenants/acme/vms/web1/ip-plan?kind=test',
      '/v1/tenants/acme/network-mappings', '/v1/tenants/acme/networks', '/v1/tenants/acme/nic-settings/export'];
    for (const p of paths) {
      expect((await s.api('GET', p, undefined, other)).status, p).toBe(404);
      expect((await s.api('GET', p, undefined, viewer)).status, p).toBe(200);
    }
    // globex has no VM web1: the same 404 as acme's.
    expect((await s.api('GET', '/v1/tenants/globex/vms/web1/nics', undefined, other)).status).toBe(404);
    const writes: [string, string, unknown][] = [
      ['PUT', '/v1/tenants/acme/vms/web1/nics', { nics: [] }], ['PUT', `/v1/tenants/acme/vms/web1/nics/${mac1}`, {}], ['DELETE', `/v1/tenants/acme/vms/web1/nics/${mac1}`, undefined],
      ['PUT', '/v1/tenants/acme/network-mappings', { mappings: [] }], ['POST', '/v1/tenants/acme/network-mappings', {}], ['DELETE', '/v1/tenants/acme/network-mappings', undefined],
      ['POST', '/v1/tenants/acme/nic-settings/import', { csv: 'vm,mac,kind,addresses,gateway,dns,network\n' }],
    ];
    for (const [method, p, body] of writes) {
      expect((await s.api(method, p, body, other)).status, `${method} ${p}`).toBe(404);
      refused(await s.api(method, p, body, viewer), 403, /^role tenant-viewer may not administer in tenant acme$/);
    }
    expect(await nicsOf('web1')).toHaveLength(1);
  });
});

describe('mappings and the IP plan', () => {
  const mTest = { kind: 'test', source: '192.168.10.0/24', target: '10.50.10.0/24', gateway: '10.50.10.1', dns: ['10.50.0.53'], network: 'dr-test' };

  it('validates the whole set before storing it', async () => {
    refused(await s.api('PUT', '/v1/tenants/acme/network-mappings', { mappings: [{ ...mTest, network: 'mgmt' }] }, admin), 400, /^mappings\[0\]\.network: no network mgmt is granted to tenant acme$/);
    refused(await s.api('PUT', '/v1/tenants/acme/network-mappings', { mappings: [{ ...mTest, network: 'dr-prod' }] }, admin), 400, /a test mapping needs a test network$/);
    refused(await s.api('PUT', '/v1/tenants/acme/network-mappings', { mappings: [{ ...mTest, gateway: '10.50.11.1' }] }, admin), 400, /^mappings\[0\]\.gateway: 10\.50\.11\.1 is off-link/);
    refused(await s.api('PUT', '/v1/tenants/acme/network-mappings', { mappings: [mTest, { ...mTest, source: '192.168.20.0/24' }] }, admin), 400, /^mappings\[1\]\.target: 10\.50\.10\.0\/24 overlaps/);
    expect((await s.api<{ mappings: unknown[] }>('GET', '/v1/tenants/acme/network-mappings')).body.mappings).toEqual([]);
    const put = await s.api('PUT', '/v1/tenants/acme/network-mappings', { mappings: [mTest] }, admin);
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    const add = await s.api<{ mappings: unknown[] }>('POST', '/v1/tenants/acme/network-mappings', { kind: 'production', source: '192.168.10.0/24', target: '10.60.10.0/24', gateway: '10.60.10.1', network: 'dr-prod' }, admin);
    expect(add.status, JSON.stringify(add.body)).toBe(201);
    expect(add.body.mappings).toHaveLength(2);
    refused(await s.api('POST', '/v1/tenants/acme/network-mappings', mTest, admin), 400, /^mappings\[2\]\.source: 192\.168\.10\.0\/24 is already mapped by mappings\[0\] \(test\)$/);
    const del = await s.api<{ mappings: unknown[] }>('DELETE', '/v1/tenants/acme/network-mappings?kind=production&source=192.168.10.0/24', undefined, admin);
    expect(del.body.mappings).toEqual([{ ...mTest, search: [] }]);
    refused(await s.api('DELETE', '/v1/tenants/acme/network-mappings?kind=production&source=192.168.10.0/24', undefined, admin), 404, /has no production mapping/);
  });

  it('shows each value and its origin, and refuses a conflict before failover', async () => {
    expect((await s.api('PUT', `/v1/tenants/acme/vms/web2/nics/${mac2}`, { reportedAddresses: ['192.168.10.7/24'] }, admin)).status).toBe(200);
    const plan = await s.api<{ nics: { mac: string; config: Record<string, unknown>; values: { field: string; value: string; from: string }[] }[] }>('GET', '/v1/tenants/acme/vms/web2/ip-plan?kind=test', undefined, viewer);
    expect(plan.status, JSON.stringify(plan.body)).toBe(200);
    const via = 'mapping 192.168.10.0/24→10.50.10.0/24';
    expect(plan.body.nics[0]!.config).toEqual({ mode: 'static', addresses: ['10.50.10.7/24'], gateway4: '10.50.10.1', dns: ['10.50.0.53'], search: [], network: 'dr-test' });
    expect(plan.body.nics[0]!.values).toEqual([
      { field: 'mode', value: 'static', from: via }, { field: 'addresses[0]', value: '10.50.10.7/24', from: via },
      { field: 'gateway4', value: '10.50.10.1', from: via }, { field: 'dns[0]', value: '10.50.0.53', from: via }, { field: 'network', value: 'dr-test', from: via },
    ]);
    const production = await s.api<{ nics: { config: { mode: string }; values: { from: string }[] }[] }>('GET', '/v1/tenants/acme/vms/web2/ip-plan?kind=production');
    expect(production.body.nics[0]!.config.mode).toBe('dhcp');
    expect(production.body.nics[0]!.values[0]!.from).toBe('dhcp');
    refused(await s.api('GET', '/v1/tenants/acme/vms/web2/ip-plan?kind=both'), 400, /^kind must be one of "production", "test"/);

    // web1 takes 10.50.10.7 explicitly in dr-test: web2's mapped address now collides.
    const web1 = await s.api('PUT', `/v1/tenants/acme/vms/web1/nics/${mac1}`, { production: prod, model: 'e1000', test: { mode: 'static', addresses: ['10.50.10.7/24'], network: 'dr-test' } }, admin);
    expect(web1.status, JSON.stringify(web1.body)).toBe(200);
    refused(await s.api('GET', '/v1/tenants/acme/vms/web2/ip-plan?kind=test'), 409, /^test plan, nic 52:54:00:00:00:02: address 10\.50\.10\.7 in network dr-test is already used by vm web1 nic 52:54:00:00:00:01 \(test\)$/);
    // A grant still named by NICs or mappings is not revoked.
    refused(await s.api('DELETE', '/v1/networks/dr-test/grants/acme'), 409, /^network dr-test is still used by tenant acme: vm web1 nic 52:54:00:00:00:01, test mapping of 192\.168\.10\.0\/24$/);
    expect((await s.api<{ tenants: string[] }>('GET', '/v1/networks/dr-test')).body.tenants).toEqual(['acme']);
  });
});

describe('CSV import and export', () => {
  const header = 'vm,mac,kind,addresses,gateway,dns,network';
  const exportCsv = async () => (await s.api<{ csv: string }>('GET', '/v1/tenants/acme/nic-settings/export')).body.csv;

  it('round-trips, and applies a file whole', async () => {
    const before = await exportCsv();
    expect(before.split('\n')[0]).toBe(`${header},search,mtu,model`);
    expect(before).toContain('web1,52:54:00:00:00:01,production,10.20.30.40/24 2001:db8::40/64,10.20.30.1,10.20.30.2,dr-prod,,,e1000');
    const again = await s.api('POST', '/v1/tenants/acme/nic-settings/import', { csv: before }, admin);
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect(await exportCsv()).toBe(before);

    const csv = `${header}\n# web2 moves to static test settings\nweb2,52:54:00:00:00:02,test,10.50.10.8/24;fd00::8/64,10.50.10.1 fd00::1,10.50.0.53; 10.50.0.54,dr-test\n`
      + 'web2,52:54:00:00:00:03,production,dhcp,,,dr-prod\n';
    const dry = await s.api<{ dryRun: boolean; rows: number }>('POST', '/v1/tenants/acme/nic-settings/import', { csv, dryRun: true }, admin);
    expect(dry.body).toMatchObject({ dryRun: true, rows: 2 });
    expect(await exportCsv()).toBe(before);
    const r = await s.api('POST', '/v1/tenants/acme/nic-settings/import', { csv }, admin);
    expect(r.body).toEqual({ dryRun: false, rows: 2, vms: ['web2'], nics: 2 });
    const web2 = await s.api<{ nics: { mac: string; test?: unknown; production?: unknown; reportedAddresses: string[] }[] }>('GET', '/v1/tenants/acme/vms/web2/nics');
    expect(web2.body.nics).toEqual([
      { mac: mac2, position: 0, model: 'virtio', test: { mode: 'static', addresses: ['10.50.10.8/24', 'fd00::8/64'], gateway4: '10.50.10.1', gateway6: 'fd00::1', dns: ['10.50.0.53', '10.50.0.54'], search: [], network: 'dr-test' }, reportedAddresses: ['192.168.10.7/24'], source: 'operator', agentAddresses: [], etag: expect.any(String) },
      { mac: '52:54:00:00:00:03', position: 1, model: 'virtio', production: { mode: 'dhcp', network: 'dr-prod' }, reportedAddresses: [], source: 'operator', agentAddresses: [], etag: expect.any(String) },
    ]);
  });

  it('refuses a whole file with one line per bad row, storing nothing', async () => {
    const before = await exportCsv();
    const many = Array.from({ length: 2000 }, (_, i) => `10.70.${i >> 8}.${(i & 255) + 1}/16`).join(' ');
    const csv = [header,
      'web1,52:54:00:00:00:01,production,10.20.30.40/24,10.20.30.1,10.20.30.3,dr-prod',
      'web1,52:54:00:00:00:01,test,10.20.30.400/24,,,dr-test',
      `web2,52:54:00:00:00:02,test,${many},,,dr-test`,
      'web2,52:54:00:00:00:03,test,10.50.10.9/24,,,"dr-test;shutdown -h now"',
      '"we\'b",52:54:00:00:00:04,test,dhcp,,,',
      'web9,52:54:00:00:00:05,test,dhcp,,,',
      'web2,52:54:00:00:00:03,production,10.20.30.40/24,,,dr-prod',
      'web1,52:54:00:00:00:01,production,dhcp,,,',
    ].join('\n');
    const r = await s.api<ErrorBody>('POST', '/v1/tenants/acme/nic-settings/import', { csv }, admin);
    expect(r.status).toBe(400);
    expect(r.body.detail.split('\n')).toEqual([
      'CSV: 7 of 8 rows refused; nothing was imported',
      'line 3: vm web1 nic 52:54:00:00:00:01 test.addresses[0]: 10.20.30.400 is not an IP address',
      'line 4: vm web2 nic 52:54:00:00:00:02 test.addresses: at most 32 addresses per NIC (got 2000)',
      'line 5: vm web2 nic 52:54:00:00:00:03 test.network: network name "dr-test;shutdown -h now" may hold only letters, digits, \'.\', \'_\' and \'-\'',
      'line 6: vm "we\'b" is not a valid VM name (1 to 64 of [a-z0-9_-], starting with a letter or digit)',
      'line 7: tenant acme has no VM web9',
      'line 8: vm web2 nic 52:54:00:00:00:03 production.addresses[0]: 10.20.30.40 in network dr-prod is already used by vm web1 nic 52:54:00:00:00:01 (production)',
      'line 9: vm web1 nic 52:54:00:00:00:01 production: already set on line 2',
    ]);
    expect(r.body.rows).toHaveLength(7);
    expect(await exportCsv()).toBe(before);
  });

  it('refuses a file with a missing column in one line', async () => {
    refused(await s.api('POST', '/v1/tenants/acme/nic-settings/import', { csv: 'vm,mac,kind,addresses,dns,network\nweb1,52:54:00:00:00:01,test,dhcp,,\n' }, admin), 400,
      /^CSV line 1: missing column gateway \(the header is vm,mac,kind,addresses,gateway,dns,network\[,search,mtu,model\]\)$/);
    refused(await s.api('POST', '/v1/tenants/acme/nic-settings/import', { csv: `${header},owner\n` }, admin), 400, /^CSV line 1: unknown column "owner"/);
    refused(await s.api('POST', '/v1/tenants/acme/nic-settings/import', { csv: `${header}\nweb1,"52:54` }, admin), 400, /^CSV: Quote Not Closed/);
  });
});

describe('failover seeds', () => {
  it('use the tenant\'s stored mappings when given them, and refuse a conflict before anything boots', async () => {
    const db = s.svc.ctx.db;
    expect((await s.api('PUT', '/v1/tenants/acme/network-mappings', { mappings: [{ kind: 'production', source: '192.168.50.0/24', target: '10.60.50.0/24', gateway: '10.60.50.1', network: 'dr-prod' }] }, admin)).status).toBe(200);
    expect((await s.api('PUT', '/v1/tenants/acme/vms/web2/nics/52:54:00:00:00:0a', { reportedAddresses: ['192.168.50.9/24'] }, admin)).status).toBe(200);
    const spec = async (): Promise<FailoverSpec> => ({
      hardware: { firmware: 'bios', secureBoot: false, cpus: 1, memoryMiB: 256, guestOs: 'linux' }, disks: [], readyProbes: [{ kind: 'guest-agent' }],
      nics: (await listVmNics(db, 'acme', 'web2')).map((n) => ({ mac: n.mac, model: n.model as NicModel, settings: n.settings, reportedAddresses: n.reportedAddresses })),
    });
    const f = { id: 'fo-seedtest', kind: 'unplanned' as const, vm: 'web2', vmGenerationId: randomUUID() };
    const dir = await mkdtemp(join(tmpdir(), 'lbseed-'));
    try {
      const seeds = await writeSeeds(dir, f, await spec(), await networkInputs(db, 'acme', 'web2', 'production'));
      const mapped = seeds.plan.find((p) => p.mac === '52:54:00:00:00:0a')!;
      expect(mapped.config).toEqual({ mode: 'static', addresses: ['10.60.50.9/24'], gateway4: '10.60.50.1', dns: [], search: [], network: 'dr-prod' });
      const written = JSON.parse(await readFile(join(dir, 'network-plan.json'), 'utf8')) as { plan: NicPlan[] };
      expect(written.plan.find((p) => p.mac === '52:54:00:00:00:0a')!.config).toEqual(mapped.config);
      expect(seeds.paths.map((p) => p.split('/').pop())).toEqual(['cidata.iso']);
      expect(await planVmIp(db, 'acme', 'web2', 'production')).toEqual(seeds.plan);
      // Without the tenant's inputs (the caller passes none), the NIC asks DHCP.
      expect((await writeSeeds(dir, f, await spec())).plan.find((p) => p.mac === '52:54:00:00:00:0a')!.config).toEqual({ mode: 'dhcp' });

      // web1 takes the mapped address explicitly in dr-prod: the plan is refused, before any seed is written.
      const nic1 = (await s.api<{ production: Record<string, unknown> }>('GET', `/v1/tenants/acme/vms/web1/nics/${mac1}`)).body;
      expect((await s.api('PUT', `/v1/tenants/acme/vms/web1/nics/${mac1}`, { production: { ...nic1.production, addresses: ['10.60.50.9/24', '2001:db8::40/64'], gateway4: '10.60.50.1' } }, admin)).status).toBe(200);
      await rm(join(dir, 'network-plan.json'));
      const err = await writeSeeds(dir, f, await spec(), await networkInputs(db, 'acme', 'web2', 'production')).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(LifeboatError);
      expect((err as LifeboatError).code).toBe('conflict');
      expect((err as Error).message).toBe('production plan, nic 52:54:00:00:00:0a: address 10.60.50.9 in network dr-prod is already used by vm web1 nic 52:54:00:00:00:01 (production)');
      await expect(readFile(join(dir, 'network-plan.json'))).rejects.toThrow(/ENOENT/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
