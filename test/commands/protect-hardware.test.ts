/**
 * The VM's hardware and NICs from `lifeboat-agent protect` (the real binary) to the service's
 * catalog (real PostgreSQL): protect --firmware … --nic … is kept in the agent's config and reported
 * with the VM's registration at the next `run --once`; the hardware and NIC routes show it as
 * reported, and the IP plan maps the agent's address. An operator's edit (the API, and
 * `lifeboat-service failover hardware` through its binary) wins over every later report; a NIC the
 * operator has not touched follows the reports. Another tenant gets 404; bad options are one line at
 * the agent before anything is stored, and bad reports a 400 at the agent endpoint that stores nothing.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signApiToken } from '../../service/trust/tokens.js';
import type { CommandOutput } from '../helpers.js';
import { referee, runBin } from '../helpers.js';
import type { HttpResult, TestEnv, TlsIdentity } from '../service/helpers.js';
import { enrolledAgent, httpsJson, operator, testEnv, testService } from '../service/helpers.js';

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let stateDir: string;
let cliConfig: string;
let disks: string[];
let admin: string;
let other: string;

const agent = (...args: string[]): Promise<CommandOutput> => runBin('agent', [...args, '--state-dir', stateDir]);
const api = <T = Record<string, unknown>>(method: string, path: string, body?: unknown, token?: string): Promise<HttpResult<T>> => operator<T>(svc, method, path, body, token);

interface Hardware { firmware: string; secureBoot: boolean; cpus: number; memoryMiB: number; guestOs: string; disks: Record<string, { bus: string; order: number }>; source: string; sources: Record<string, string> }
interface Nic { mac: string; position: number; model: string; reportedAddresses: string[]; source: string; agentAddresses: string[]; test?: unknown }
// What the VM's hardware and NICs hold, without the etag every single object of the API carries
// (docs/api.md, ETags; tested by test/api/).
const content = <T extends object>(o: T): T => {
  const c = { ...o } as Record<string, unknown>;
  delete c.etag;
  return c as unknown as T;
};
const hardware = async () => content((await api<Hardware>('GET', '/v1/tenants/acme/vms/web01/hardware')).body);
const nics = async () => (await api<{ nics: Nic[] }>('GET', '/v1/tenants/acme/vms/web01/nics')).body.nics.map(content);
const configFile = () => readFile(join(stateDir, 'vms', 'web01', 'config.json'), 'utf8');

async function runOnce(): Promise<void> {
  const r = await agent('run', '--once');
  expect(r.code, r.stderr).toBe(0);
}

/** exit 1, one line on stderr matching pattern, no stack trace. */
function oneLine(r: CommandOutput, pattern: RegExp): void {
  expect(r.code, r.stderr).toBe(1);
  expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
  expect(r.stderr.trim()).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\bat .*\.ts:\d+/);
}

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  expect((await api('POST', '/v1/tenants', { name: 'acme' })).status).toBe(201);
  expect((await api('POST', '/v1/tenants', { name: 'globex' })).status).toBe(201);
  expect((await api('POST', '/v1/tenants/acme/authorizations', { pattern: '*.acme.test' })).status).toBeLessThan(300);
  const token = (await api<{ token: string }>('POST', '/v1/tenants/acme/tokens', {})).body.token;
  stateDir = join(env.dir, 'agent');
  const enrolled = await agent('enroll', '--service', svc.agentUrl, '--token', token, '--name', 'hv01.acme.test');
  expect(enrolled.code, enrolled.stderr).toBe(0);
  disks = [join(env.dir, 'web01-0.vhdx'), join(env.dir, 'web01-1.vhdx')];
  for (const d of disks) await referee('qemu-img', ['create', '-q', '-f', 'vhdx', d, '4M']);
  admin = await signApiToken(svc.ctx.signer, { role: 'tenant-admin', tenant: 'acme', sub: 'admin@acme' }, 3600);
  other = await signApiToken(svc.ctx.signer, { role: 'tenant-admin', tenant: 'globex', sub: 'admin@globex' }, 3600);
  // A test mapping for the source subnets the NICs report, and the CLI's config on the test service's API port.
  expect((await api('PUT', '/v1/tenants/acme/network-mappings', { mappings: [
    { kind: 'test', source: '192.168.10.0/24', target: '10.50.10.0/24', gateway: '10.50.10.1' },
    { kind: 'test', source: '192.168.20.0/24', target: '10.50.20.0/24', gateway: '10.50.20.1' },
  ] })).status).toBe(200);
  const file = JSON.parse(await readFile(env.config.path, 'utf8')) as { api: { port: number } };
  file.api.port = Number(new URL(svc.apiUrl).port);
  cliConfig = join(dirname(env.config.path), 'cli.json');
  await writeFile(cliConfig, JSON.stringify(file));
}, 180_000);

afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

describe('protect reports the VM\'s hardware and NICs', () => {
  it('keeps them in the agent\'s config and the service shows them as reported', async () => {
    const p = await agent('protect', 'web01', '--disk', disks[0]!, '--disk', disks[1]!, '--firmware', 'uefi', '--secure-boot', '--cpus', '2', '--memory', '4G',
      '--guest-os', 'windows', '--disk-bus', 'sata', '--nic', '52-54-00-AA-00-01,model=e1000,ip=192.168.10.7/24,ip=2001:DB8::7/64', '--nic', '52:54:00:aa:00:02,ip=192.168.20.9/24');
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout).toContain('uefi+secure-boot, 2 vCPUs, 4096 MiB, windows, sata disks; NICs 52:54:00:aa:00:01 (192.168.10.7/24 2001:db8::7/64), 52:54:00:aa:00:02 (192.168.20.9/24)');
    const config = JSON.parse(await configFile()) as Record<string, unknown>;
    expect(config.hardware).toEqual({ firmware: 'uefi', secureBoot: true, cpus: 2, memoryMiB: 4096, guestOs: 'windows', diskBus: 'sata' });
    expect(config.nics).toEqual([
      { mac: '52:54:00:aa:00:01', model: 'e1000', addresses: ['192.168.10.7/24', '2001:db8::7/64'] },
      { mac: '52:54:00:aa:00:02', addresses: ['192.168.20.9/24'] },
    ]);
    await runOnce();

    const reported = { firmware: 'reported', secureBoot: 'reported', cpus: 'reported', memoryMiB: 'reported', guestOs: 'reported', disks: 'reported' };
    expect(await hardware()).toEqual({
      firmware: 'uefi', secureBoot: true, cpus: 2, memoryMiB: 4096, guestOs: 'windows', disks: { disk0: { bus: 'sata', order: 0 }, disk1: { bus: 'sata', order: 1 } },
      readyProbes: [{ kind: 'guest-agent' }], source: 'reported', sources: reported,
    });
    expect(await nics()).toEqual([
      { mac: '52:54:00:aa:00:01', position: 0, model: 'e1000', reportedAddresses: [], source: 'reported', agentAddresses: ['192.168.10.7/24', '2001:db8::7/64'] },
      { mac: '52:54:00:aa:00:02', position: 1, model: 'virtio', reportedAddresses: [], source: 'reported', agentAddresses: ['192.168.20.9/24'] },
    ]);
    // No address recorded by an operator: the mappings start from the agent's.
    const plan = await api<{ nics: { mac: string; config: { addresses?: string[] } }[] }>('GET', '/v1/tenants/acme/vms/web01/ip-plan?kind=test', undefined, admin);
    expect(plan.status, JSON.stringify(plan.body)).toBe(200);
    expect(plan.body.nics.map((n) => [n.mac, n.config.addresses])).toEqual([['52:54:00:aa:00:01', ['10.50.10.7/24']], ['52:54:00:aa:00:02', ['10.50.20.9/24']]]);

    // protect again without those options keeps them.
    const again = await agent('protect', 'web01', '--disk', disks[0]!, '--disk', disks[1]!, '--frequency', '30s');
    expect(again.code, again.stderr).toBe(0);
    expect((JSON.parse(await configFile()) as Record<string, unknown>).nics).toEqual(config.nics);
  }, 300_000);

  it('an operator\'s edit wins over later reports; an untouched NIC follows them', async () => {
    // The CLI reads the record, changes --cpus and writes it back whole: only cpus becomes the operator's.
    const cli = await runBin('service', ['failover', 'hardware', 'web01', '--tenant', 'acme', '--cpus', '4', '--json', '--config', cliConfig]);
    expect(cli.code, cli.stderr).toBe(0);
    expect(JSON.parse(cli.stdout)).toMatchObject({ cpus: 4, memoryMiB: 4096, source: 'operator', sources: { cpus: 'operator', memoryMiB: 'reported' } });
    // The tenant's admin pins the guest OS as it stands and records NIC 1's source address.
    const hw = await hardware();
    const pin = await api<Hardware>('PUT', '/v1/tenants/acme/vms/web01/hardware', { ...hw, sources: { ...hw.sources, guestOs: 'operator' } }, admin);
    expect(pin.status, JSON.stringify(pin.body)).toBe(200);
    expect(pin.body.sources).toMatchObject({ cpus: 'operator', guestOs: 'operator', memoryMiB: 'reported', firmware: 'reported' });
    const nic1 = await api<Nic>('PUT', '/v1/tenants/acme/vms/web01/nics/52:54:00:aa:00:01', { model: 'e1000', reportedAddresses: ['192.168.20.44/24'] }, admin);
    expect(nic1.status, JSON.stringify(nic1.body)).toBe(200);
    expect(nic1.body).toMatchObject({ source: 'operator', reportedAddresses: ['192.168.20.44/24'], agentAddresses: ['192.168.10.7/24', '2001:db8::7/64'] });

    // The source VM changes: every option given again, NIC 2 gone, NIC 3 new.
    const p = await agent('protect', 'web01', '--disk', disks[0]!, '--disk', disks[1]!, '--cpus', '8', '--memory', '8192M', '--guest-os', 'linux', '--disk-bus', 'virtio',
      '--nic', '52:54:00:aa:00:01,model=rtl8139,ip=192.168.10.8/24', '--nic', '52:54:00:aa:00:03,model=e1000,ip=192.168.10.30/24');
    expect(p.code, p.stderr).toBe(0);
    await runOnce();
    const after = await hardware();
    expect(after).toMatchObject({ cpus: 4, guestOs: 'windows', memoryMiB: 8192, firmware: 'uefi', disks: { disk0: { bus: 'virtio', order: 0 }, disk1: { bus: 'virtio', order: 1 } } });
    expect(after.sources).toEqual({ firmware: 'reported', secureBoot: 'reported', cpus: 'operator', memoryMiB: 'reported', guestOs: 'operator', disks: 'reported' });
    expect(await nics()).toEqual([
      // The operator's NIC keeps its model and recorded address; the agent's new address is kept beside them.
      { mac: '52:54:00:aa:00:01', position: 0, model: 'e1000', reportedAddresses: ['192.168.20.44/24'], source: 'operator', agentAddresses: ['192.168.10.8/24'] },
      { mac: '52:54:00:aa:00:03', position: 1, model: 'e1000', reportedAddresses: [], source: 'reported', agentAddresses: ['192.168.10.30/24'] },
    ]);
    // The operator's recorded address wins in the plan; NIC 3 maps the agent's.
    const plan = await api<{ nics: { mac: string; config: { addresses?: string[] } }[] }>('GET', '/v1/tenants/acme/vms/web01/ip-plan?kind=test');
    expect(plan.body.nics.map((n) => [n.mac, n.config.addresses])).toEqual([['52:54:00:aa:00:01', ['10.50.20.44/24']], ['52:54:00:aa:00:03', ['10.50.10.30/24']]]);

    // A NIC written back unchanged (the CLI's read-modify-write of another field) stays the agent's.
    const same = await api<{ nics: Nic[] }>('PUT', '/v1/tenants/acme/vms/web01/nics', { nics: (await nics()).map((n) => ({ mac: n.mac, model: n.model, reportedAddresses: n.reportedAddresses })) }, admin);
    expect(same.status, JSON.stringify(same.body)).toBe(200);
    expect(same.body.nics.map((n) => n.source)).toEqual(['operator', 'reported']);
  }, 300_000);

  it('answers another tenant 404 on the hardware and NIC routes', async () => {
    for (const [method, path, body] of [
      ['GET', '/v1/tenants/acme/vms/web01/hardware'], ['PUT', '/v1/tenants/acme/vms/web01/hardware', { firmware: 'bios', cpus: 1, memoryMiB: 128, guestOs: 'linux' }],
      ['GET', '/v1/tenants/acme/vms/web01/nics'], ['GET', '/v1/tenants/acme/vms/web01/nics/52:54:00:aa:00:01'],
      ['PUT', '/v1/tenants/acme/vms/web01/nics/52:54:00:aa:00:01', { model: 'virtio' }],
    ] as [string, string, unknown?][]) {
      expect((await api(method, path, body, other)).status, `${method} ${path}`).toBe(404);
    }
    expect((await hardware()).cpus).toBe(4);
    expect(await nics()).toHaveLength(2);
  });
});

describe('mistakes', () => {
  it('refuses bad options at the agent in one line, before anything is stored', async () => {
    const before = await configFile();
    const protect = (...args: string[]) => agent('protect', 'web01', '--disk', disks[0]!, '--disk', disks[1]!, ...args);
    const cases: [string[], RegExp][] = [
      [['--nic', '52:54:00:aa:00:zz'], /^lifeboat-agent: --nic "52:54:00:aa:00:zz" is not a MAC address/],
      [['--nic', '01:00:5e:00:00:01'], /^lifeboat-agent: --nic 01:00:5e:00:00:01 is a multicast MAC address/],
      [['--nic', '52:54:00:aa:00:01', '--nic', '52-54-00-AA-00-01'], /^lifeboat-agent: --nic 52:54:00:aa:00:01 is given twice$/],
      [['--nic', '52:54:00:aa:00:01,ip=192.168.300.1/24'], /^lifeboat-agent: --nic 52:54:00:aa:00:01 ip=: "192\.168\.300\.1\/24" is not an IP address/],
      [['--nic', '52:54:00:aa:00:01,ip=192.168.1.1/33'], /^lifeboat-agent: --nic 52:54:00:aa:00:01 ip=: "192\.168\.1\.1\/33": the prefix must be 1 to 32$/],
      [['--nic', '52:54:00:aa:00:01,model=ne2k'], /^lifeboat-agent: --nic 52:54:00:aa:00:01 model= "ne2k" must be virtio, e1000 or rtl8139$/],
      [['--nic', '52:54:00:aa:00:01,vlan=4'], /^lifeboat-agent: --nic 52:54:00:aa:00:01: "vlan=4" is not model=MODEL or ip=ADDRESS\/PREFIX$/],
      [['--memory', '4096'], /^lifeboat-agent: --memory "4096" must be a size with its unit, e.g. 4G or 512M$/],
      [['--memory', '32M'], /^lifeboat-agent: --memory "32M" must be from 64M to 4T$/],
      [['--memory', '1.5M'], /^lifeboat-agent: --memory "1\.5M" must be a whole number of MiB$/],
      [['--memory', 'lots'], /^lifeboat-agent: --memory "lots" must be a size with its unit/],
      [['--cpus', '0'], /^lifeboat-agent: --cpus "0" must be a whole number of vCPUs from 1 to 240$/],
      [['--cpus', '241'], /^lifeboat-agent: --cpus "241" must be/],
      [['--cpus', 'two'], /^lifeboat-agent: --cpus "two" must be/],
      [['--firmware', 'efi'], /^lifeboat-agent: --firmware "efi" must be bios or uefi$/],
      [['--firmware', 'bios'], /^lifeboat-agent: --firmware bios: the VM has Secure Boot, which needs uefi \(add --no-secure-boot\)$/],
      [['--guest-os', 'beos'], /^lifeboat-agent: --guest-os "beos" must be linux, windows or other$/],
      [['--disk-bus', 'nvme'], /^lifeboat-agent: --disk-bus "nvme" must be virtio, scsi, sata or ide$/],
    ];
    // Four at a time: each run of the binary loads the TypeScript sources afresh.
    for (let i = 0; i < cases.length; i += 4) {
      const batch = cases.slice(i, i + 4);
      const runs = await Promise.all(batch.map(([args]) => protect(...args)));
      runs.forEach((r, j) => oneLine(r, batch[j]![1]));
    }
    expect(await configFile()).toBe(before);
    // A new VM's config is not written either.
    const fresh = await agent('protect', 'web02', '--disk', join(env.dir, 'web02.vhdx'), '--secure-boot');
    oneLine(fresh, /^lifeboat-agent: --secure-boot needs --firmware uefi$/);
    await expect(readFile(join(stateDir, 'vms', 'web02', 'config.json'))).rejects.toThrow(/ENOENT/);
  }, 300_000);

  it('refuses bad reports at the agent endpoint with a 400 that stores nothing, and bad values at the API', async () => {
    const id: TlsIdentity = await enrolledAgent(svc, 'acme', '*.acme.test', 'hv02.acme.test');
    const base = { disks: [{ id: 'disk0', virtualSize: 4 << 20, format: 'raw' }], frequency: '5m', history: 0, appConsistentEvery: 0, compression: 'zstd' };
    const register = (body: unknown) => httpsJson<{ error: { code: string; message: string } }>(`${svc.agentUrl}/v1/vms/web09`, { method: 'PUT', body, caPem: svc.ctx.ca.certPem, identity: id });
    const cases: [unknown, RegExp][] = [
      [{ ...base, nics: [{ mac: 'not-a-mac' }] }, /"not-a-mac" is not a MAC address/],
      [{ ...base, nics: [{ mac: '52:54:00:aa:00:09' }, { mac: '52-54-00-AA-00-09' }] }, /52:54:00:aa:00:09 is given twice/],
      [{ ...base, nics: [{ mac: '52:54:00:aa:00:09', addresses: ['192.168.1.1/40'] }] }, /the prefix must be 1 to 32/],
      [{ ...base, hardware: { cpus: 0 } }, /cpus/],
      [{ ...base, hardware: { memoryMiB: 32 } }, /memoryMiB/],
      [{ ...base, hardware: { firmware: 'bios', secureBoot: true } }, /secureBoot needs firmware uefi/],
      [{ ...base, disks: [{ ...base.disks[0], bus: 'floppy' }] }, /bus/],
    ];
    for (const [body, pattern] of cases) {
      const r = await register(body);
      expect(r.status, JSON.stringify(r.body)).toBe(400);
      expect(r.body.error.code).toBe('invalid_argument');
      expect(r.body.error.message).not.toContain('\n');
      expect(r.body.error.message).toMatch(pattern);
    }
    expect((await api('GET', '/v1/tenants/acme/vms/web09/hardware')).status).toBe(404);

    for (const [path, body, pattern] of [
      ['/v1/tenants/acme/vms/web01/hardware', { firmware: 'uefi', cpus: 0, memoryMiB: 4096, guestOs: 'linux' }, /cpus/],
      ['/v1/tenants/acme/vms/web01/hardware', { firmware: 'uefi', cpus: 2, memoryMiB: 10, guestOs: 'linux' }, /memoryMiB/],
      ['/v1/tenants/acme/vms/web01/nics/52:54:00:aa:00:zz', { model: 'virtio' }, /not a MAC address/],
      ['/v1/tenants/acme/vms/web01/nics', { nics: [{ mac: '52:54:00:aa:00:05' }, { mac: '52-54-00-aa-00-05' }] }, /52:54:00:aa:00:05/],
    ] as [string, unknown, RegExp][]) {
      const r = await api<{ detail: string }>('PUT', path, body, admin);
      expect(r.status, JSON.stringify(r.body)).toBe(400);
      expect(r.body.detail).not.toContain('\n');
      expect(r.body.detail).toMatch(pattern);
    }
    expect((await hardware()).cpus).toBe(4);
    expect((await nics()).map((n) => n.mac)).toEqual(['52:54:00:aa:00:01', '52:54:00:aa:00:03']);
  });
});
