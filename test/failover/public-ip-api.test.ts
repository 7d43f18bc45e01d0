/**
 * Public address pools and mappings through the API and the CLI binary, with the real service and
 * PostgreSQL catalog: pools are the hoster's and granted to tenants address by address; a tenant maps
 * only addresses granted to it, to its own VMs' NICs or DR addresses, 1:1; every refusal is one 4xx
 * line that stores nothing; another tenant's credentials get 404 on every tenant route, and a viewer
 * 403 on writes.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { referee, runBin } from '../helpers.js';
import type { CommandOutput } from '../helpers.js';
import type { HttpResult } from '../service/helpers.js';
import { FailoverScenario } from './failover-harness.js';

type ErrorBody = { code: string; detail: string };
type Pool = { name: string; total: number; free: number; addresses: { address: string; tenant: string | null; vm: string | null }[] };
type Mapping = { address: string; vm: string; mac: string | null; drAddress: string | null; allow: string[]; test: boolean };
const mac = '52:54:00:00:00:01';

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
  const nics = await s.api('PUT', '/v1/tenants/acme/vms/web1/nics', { nics: [{ mac, production: { mode: 'static', addresses: ['192.0.2.20/24', '2001:db8:d::20/64'], gateway4: '192.0.2.1' } }] });
  expect(nics.status, JSON.stringify(nics.body)).toBe(200);
  const file = JSON.parse(await readFile(s.env.config.path, 'utf8')) as { api: { port: number } };
  file.api.port = Number(new URL(s.svc.apiUrl).port);
  config = join(dirname(s.env.config.path), 'cli.json');
  await writeFile(config, JSON.stringify(file));
}, 180_000);

afterAll(async () => {
  await s?.stop();
}, 120_000);

function refused(r: HttpResult<unknown>, status: number, pattern: RegExp): void {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  const message = (r.body as ErrorBody).detail;
  expect(message).not.toContain('\n');
  expect(message).toMatch(pattern);
}

const pool = async (name: string) => (await s.api<Pool>('GET', `/v1/public-ip-pools/${name}`)).body;
const mappingsOf = async (tenant: string) => (await s.api<{ mappings: Mapping[] }>('GET', `/v1/tenants/${tenant}/public-ip-mappings`)).body.mappings;

describe('public address pools', () => {
  it('are made from addresses and prefixes by the hoster only, each address in one pool', async () => {
    const made = await s.api<Pool>('POST', '/v1/public-ip-pools', { name: 'edge', addresses: ['203.0.113.8/30', '203.0.113.20', '2001:db8:f::10'] });
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    expect(made.body).toMatchObject({ name: 'edge', total: 4, free: 4 });
    expect(made.body.addresses.map((a) => a.address)).toEqual(['203.0.113.9', '203.0.113.10', '203.0.113.20', '2001:db8:f::10']);
    refused(await s.api('POST', '/v1/public-ip-pools', { name: 'edge', addresses: ['198.51.100.9'] }), 409, /^public address pool edge already exists$/);
    refused(await s.api('POST', '/v1/public-ip-pools', { name: 'edge2', addresses: ['198.51.100.9', '203.0.113.20'] }), 409, /^203\.0\.113\.20 is already in pool edge$/);
    refused(await s.api('POST', '/v1/public-ip-pools', { name: 'edge;reboot', addresses: ['198.51.100.9'] }), 400, /^name: pool name "edge;reboot" may hold only letters/);
    refused(await s.api('POST', '/v1/public-ip-pools', { name: 'x', addresses: ['203.0.113.300'] }), 400, /^addresses\[0\]: 203\.0\.113\.300 is not an IP address$/);
    refused(await s.api('POST', '/v1/public-ip-pools', { name: 'x', addresses: [] }), 400, /^addresses must have at least 1 items$/);
    refused(await s.api('POST', '/v1/public-ip-pools', { name: 'x', addresses: ['10.0.0.0/8'] }), 400, /^addresses\[0\]: 10\.0\.0\.0\/8 holds 16777214 usable addresses; at most 1024 per pool$/);
    refused(await s.api('POST', '/v1/public-ip-pools', { name: 'x', addresses: ['203.0.113.50'], extra: 1 }), 400, /^unknown field extra$/);
    expect((await s.api('POST', '/v1/public-ip-pools', { name: 'x', addresses: ['203.0.113.50'] }, admin)).status).toBe(403);
    expect((await s.api('GET', '/v1/public-ip-pools', undefined, admin)).status).toBe(403);
    expect((await s.api('GET', '/v1/public-ip-pools/edge', undefined, other)).status).toBe(403);
    refused(await s.api('GET', '/v1/public-ip-pools/nosuch'), 404, /^no public address pool nosuch$/);
  });

  it('grant addresses by count or by name, to one tenant each', async () => {
    const g = await s.api<{ granted: string[]; addresses: string[] }>('POST', '/v1/public-ip-pools/edge/grants', { tenant: 'acme', count: 2 });
    expect(g.status, JSON.stringify(g.body)).toBe(201);
    expect(g.body).toMatchObject({ granted: ['203.0.113.9', '203.0.113.10'], addresses: ['203.0.113.9', '203.0.113.10'] });
    expect((await s.api('POST', '/v1/public-ip-pools/edge/grants', { tenant: 'acme', addresses: ['2001:DB8:F::10'] })).status).toBe(201);
    const again = await s.api<{ granted: string[] }>('POST', '/v1/public-ip-pools/edge/grants', { tenant: 'acme', addresses: ['203.0.113.9'] });
    expect([again.status, again.body.granted]).toEqual([200, []]);
    refused(await s.api('POST', '/v1/public-ip-pools/edge/grants', { tenant: 'globex', addresses: ['203.0.113.9'] }), 409, /^203\.0\.113\.9 is granted to tenant acme$/);
    refused(await s.api('POST', '/v1/public-ip-pools/edge/grants', { tenant: 'globex', count: 2 }), 409, /^pool edge has 1 free address\(es\); 2 asked$/);
    refused(await s.api('POST', '/v1/public-ip-pools/edge/grants', { tenant: 'globex', addresses: ['198.51.100.1'] }), 400, /^addresses\[0\]: 198\.51\.100\.1 is not in pool edge$/);
    refused(await s.api('POST', '/v1/public-ip-pools/edge/grants', { tenant: 'globex', count: 1, addresses: ['203.0.113.20'] }), 400, /^give count .* or addresses, not both$/);
    refused(await s.api('POST', '/v1/public-ip-pools/edge/grants', { tenant: 'nosuch', count: 1 }), 404, /^no tenant nosuch$/);
    refused(await s.api('POST', '/v1/public-ip-pools/nosuch/grants', { tenant: 'globex', count: 1 }), 404, /^no public address pool nosuch$/);
    expect((await s.api('POST', '/v1/public-ip-pools/edge/grants', { tenant: 'globex', count: 1 })).status).toBe(201);
    expect((await pool('edge')).addresses.map((a) => `${a.address} ${a.tenant}`)).toEqual(['203.0.113.9 acme', '203.0.113.10 acme', '203.0.113.20 globex', '2001:db8:f::10 acme']);
    const forGlobex = (await s.api<{ pools: Pool[] }>('GET', '/v1/public-ip-pools?tenant=globex')).body.pools;
    expect(forGlobex.map((p) => p.addresses.map((a) => a.address))).toEqual([['203.0.113.20']]);
    expect((await s.api<{ addresses: { address: string }[] }>('GET', '/v1/tenants/acme/public-ips', undefined, viewer)).body.addresses.map((a) => a.address))
      .toEqual(['203.0.113.9', '203.0.113.10', '2001:db8:f::10']);
  });
});

describe('public address mappings', () => {
  it('map a granted address to a NIC or a DR address with an allow-list, and change and remove it', async () => {
    const m = await s.api<Mapping>('POST', '/v1/tenants/acme/public-ip-mappings', { address: '203.0.113.9', vm: 'web1', mac: '52-54-00-00-00-01', allow: ['TCP/443', 'tcp/22', 'icmp'] }, admin);
    expect(m.status, JSON.stringify(m.body)).toBe(201);
    expect(m.body).toMatchObject({ address: '203.0.113.9', vm: 'web1', mac, drAddress: null, allow: ['tcp/443', 'tcp/22', 'icmp'], test: false });
    const v6 = await s.api<Mapping>('POST', '/v1/tenants/acme/public-ip-mappings', { address: '2001:db8:f::10', vm: 'web1', mac, allow: ['tcp/443'], test: true });
    expect(v6.status, JSON.stringify(v6.body)).toBe(201);
    expect((await s.api<Mapping>('GET', '/v1/tenants/acme/public-ip-mappings/2001%3Adb8%3Af%3A%3A10', undefined, viewer)).body.address).toBe('2001:db8:f::10');
    const put = await s.api<Mapping>('PUT', '/v1/tenants/acme/public-ip-mappings/203.0.113.9', { vm: 'web1', drAddress: '192.0.2.20', allow: ['udp/60000-61000'], test: true }, admin);
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect(put.body).toMatchObject({ mac: null, drAddress: '192.0.2.20', allow: ['udp/60000-61000'], test: true });
    expect((await s.api<{ addresses: { address: string; vm: string | null }[] }>('GET', '/v1/tenants/acme/public-ips')).body.addresses)
      .toEqual([{ address: '203.0.113.9', pool: 'edge', vm: 'web1' }, { address: '203.0.113.10', pool: 'edge', vm: null }, { address: '2001:db8:f::10', pool: 'edge', vm: 'web1' }]);
    expect((await s.api('DELETE', '/v1/tenants/acme/public-ip-mappings/2001:db8:f::10', undefined, admin)).body).toEqual({ deleted: '2001:db8:f::10' });
    refused(await s.api('DELETE', '/v1/tenants/acme/public-ip-mappings/2001:db8:f::10'), 404, /^tenant acme has no mapping of 2001:db8:f::10$/);
    expect((await mappingsOf('acme')).map((x) => x.address)).toEqual(['203.0.113.9']);
  });

  it('refuse bad input with one line and store nothing', async () => {
    const before = await mappingsOf('acme');
    const base = { address: '203.0.113.10', vm: 'web1', mac };
    const cases: [unknown, number, RegExp][] = [
      [{ ...base, allow: ['tcp/22; flush ruleset'] }, 400, /^allow\[0\]: "tcp\/22; flush ruleset" is not tcp\/PORT/],
      [{ ...base, allow: ['tcp/0'] }, 400, /^allow\[0\]: port 0 is not from 1 to 65535$/],
      [{ ...base, allow: 'tcp/22' }, 400, /^allow must be a list like/],
      [{ address: '203.0.113.10', vm: 'web1', allow: [] }, 400, /^give mac .* or drAddress, or both$/],
      [{ ...base, mac: '01:00:5e:00:00:01' }, 400, /^mac: .*multicast/],
      [{ ...base, mac: '52:54:00:00:00:99' }, 400, /^mac: VM web1 has no NIC 52:54:00:00:00:99/],
      [{ ...base, mac: undefined, drAddress: '2001:db8:d::20' }, 400, /^drAddress: 2001:db8:d::20 and the public address 203\.0\.113\.10 are of different families/],
      [{ ...base, drAddress: '224.0.0.1' }, 400, /^drAddress: 224\.0\.0\.1 is a multicast address$/],
      [{ ...base, vm: 'nosuch' }, 404, /^tenant acme has no VM nosuch$/],
      [{ ...base, vm: 'web1;ls' }, 400, /^vm must be a VM id/],
      [{ ...base, address: '203.0.113.20' }, 404, /^tenant acme has no public address 203\.0\.113\.20$/],
      [{ ...base, address: '198.51.100.77' }, 404, /^tenant acme has no public address 198\.51\.100\.77$/],
      [{ ...base, address: 'edge' }, 400, /^address: edge is not an IP address$/],
      [{ ...base, address: '203.0.113.9' }, 409, /^203\.0\.113\.9 is already mapped/],
      [{ ...base, drAddress: '192.0.2.20' }, 409, /^VM web1 address 192\.0\.2\.20 already has public address 203\.0\.113\.9: one public address per VM address$/],
      [{ ...base, extra: true }, 400, /^unknown field extra$/],
    ];
    for (const [body, status, pattern] of cases) refused(await s.api('POST', '/v1/tenants/acme/public-ip-mappings', body), status, pattern);
    refused(await s.api('PUT', '/v1/tenants/acme/public-ip-mappings/203.0.113.10', { vm: 'web1', mac, allow: [] }), 404, /^tenant acme has no mapping of 203\.0\.113\.10$/);
    refused(await s.api('GET', '/v1/tenants/acme/public-ip-mappings/not-an-ip'), 400, /^address: not-an-ip is not an IP address$/);
    expect(await mappingsOf('acme')).toEqual(before);
  });

  it('answer another tenant 404 on every route, and a viewer 403 on writes', async () => {
    const body = { vm: 'web1', mac, allow: [] };
    for (const [method, path, b] of [
      ['GET', '/v1/tenants/acme/public-ips'], ['GET', '/v1/tenants/acme/public-ip-mappings'], ['GET', '/v1/tenants/acme/public-ip-mappings/203.0.113.9'],
      ['PUT', '/v1/tenants/acme/public-ip-mappings/203.0.113.9', body], ['DELETE', '/v1/tenants/acme/public-ip-mappings/203.0.113.9'],
      ['POST', '/v1/tenants/acme/public-ip-mappings', { address: '203.0.113.10', ...body }],
      // Under its own name: acme's address and mapping do not exist for globex.
      ['GET', '/v1/tenants/globex/public-ip-mappings/203.0.113.9'], ['DELETE', '/v1/tenants/globex/public-ip-mappings/203.0.113.9'],
      ['PUT', '/v1/tenants/globex/public-ip-mappings/203.0.113.9', body], ['POST', '/v1/tenants/globex/public-ip-mappings', { address: '203.0.113.10', ...body }],
    ] as const) {
      const r = await s.api(method, path, b, other);
      expect(r.status, `${method} ${path}: ${JSON.stringify(r.body)}`).toBe(404);
    }
    expect((await s.api('POST', '/v1/tenants/acme/public-ip-mappings', { address: '203.0.113.10', ...body }, viewer)).status).toBe(403);
    expect((await s.api('DELETE', '/v1/tenants/acme/public-ip-mappings/203.0.113.9', undefined, viewer)).status).toBe(403);
    expect((await s.api<{ mappings: unknown[] }>('GET', '/v1/tenants/globex/public-ip-mappings', undefined, other)).body.mappings).toEqual([]);
    expect((await mappingsOf('acme')).map((x) => x.address)).toEqual(['203.0.113.9']);
  });

  it('keep a mapped address and a pool with grants from being taken away', async () => {
    refused(await s.api('DELETE', '/v1/public-ip-pools/edge/grants/acme'), 409, /^tenant acme maps 203\.0\.113\.9 to VM web1: unmap first$/);
    refused(await s.api('DELETE', '/v1/public-ip-pools/edge'), 409, /^pool edge has addresses granted to tenants acme, globex: revoke them first$/);
    expect((await s.api('DELETE', '/v1/public-ip-pools/edge/grants/acme?address=203.0.113.10')).body).toEqual({ pool: 'edge', tenant: 'acme', revoked: ['203.0.113.10'] });
    refused(await s.api('DELETE', '/v1/public-ip-pools/edge/grants/acme?address=203.0.113.10'), 404, /^203\.0\.113\.10 of pool edge is not granted to tenant acme$/);
    expect((await s.api('DELETE', '/v1/public-ip-pools/edge/grants/globex')).body).toEqual({ pool: 'edge', tenant: 'globex', revoked: ['203.0.113.20'] });
    const doc = (await s.api<{ paths: Record<string, unknown> }>('GET', '/v1/openapi.json')).body;
    expect(Object.keys(doc.paths).filter((p) => p.includes('public-ip'))).toEqual([
      '/v1/public-ip-pools', '/v1/public-ip-pools/{name}', '/v1/public-ip-pools/{name}/grants', '/v1/public-ip-pools/{name}/grants/{tenant}',
      '/v1/tenants/{tenant}/public-ips', '/v1/tenants/{tenant}/public-ip-mappings', '/v1/tenants/{tenant}/public-ip-mappings/{address}',
    ]);
  });
});

describe('lifeboat-service public-ip', () => {
  const cli = (...args: string[]): Promise<CommandOutput> => runBin('service', [...args, '--config', config]);
  const oneLine = (r: CommandOutput, pattern: RegExp) => {
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(pattern);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  };

  it('creates and grants pools, maps and unmaps, and says each mistake in one line', async () => {
    // One after the other: the second pool overlaps the first.
    expect((await cli('public-ip', 'pool', 'create', 'cli-pool', '--address', '198.51.100.16/30,198.51.100.40')).stdout).toBe('created pool cli-pool with 3 address(es)\n');
    const [bad, help] = await Promise.all([
      cli('public-ip', 'pool', 'create', 'cli-bad', '--address', '198.51.100.16/29'),
      runBin('service', ['public-ip', 'map', '--help']),
    ]);
    oneLine(bad, /^lifeboat-service: 198\.51\.100\.17 is already in pool cli-pool/);
    expect(help.stdout).toMatch(/--allow <rule>/);
    expect((await cli('public-ip', 'pool', 'grant', 'cli-pool', '--tenant', 'acme', '--count', '1')).stdout).toBe('granted 198.51.100.17 to tenant acme; it holds 1 address(es) of pool cli-pool\n');
    const [mapped, noTarget, badAllow] = await Promise.all([
      cli('public-ip', 'map', '198.51.100.17', '--tenant', 'acme', '--vm', 'web1', '--mac', mac, '--allow', 'tcp/80,tcp/443', '--allow', 'icmp'),
      cli('public-ip', 'map', '198.51.100.18', '--tenant', 'acme', '--vm', 'web1'),
      cli('public-ip', 'map', '198.51.100.18', '--tenant', 'acme', '--vm', 'web1', '--dr-address', '192.0.2.30', '--allow', 'ssh'),
    ]);
    expect(mapped.stdout, mapped.stderr).toBe(`mapped 198.51.100.17\t→ vm web1 nic ${mac}\tallow tcp/80,tcp/443,icmp\n`);
    oneLine(noTarget, /^lifeboat-service: give --mac .* or --dr-address\n$/);
    oneLine(badAllow, /^lifeboat-service: allow\[0\]: "ssh" is not tcp\/PORT/);
    const listed = JSON.parse((await cli('public-ip', 'list', '--tenant', 'acme', '--json')).stdout) as { address: string; mapping: Mapping | null }[];
    expect(listed.map((r) => `${r.address} ${r.mapping?.allow.join(',') ?? '-'}`)).toEqual(['198.51.100.17 tcp/80,tcp/443,icmp', '203.0.113.9 udp/60000-61000', '2001:db8:f::10 -']);
    expect((await cli('public-ip', 'unmap', '198.51.100.17', '--tenant', 'acme')).stdout).toBe('unmapped 198.51.100.17\n');
    oneLine(await cli('public-ip', 'unmap', '198.51.100.17', '--tenant', 'acme'), /^lifeboat-service: tenant acme has no mapping of 198\.51\.100\.17\n$/);
    expect((await cli('public-ip', 'pool', 'list', '--tenant', 'acme')).stdout).toContain('cli-pool\t1 address(es), 0 free\n  198.51.100.17\ttenant acme\n');
  }, 600_000);
});
