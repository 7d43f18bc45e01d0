/**
 * Every generated network-config rendered offline by this machine's cloud-init (22.4, Debian 12's) into
 * ifupdown (eni), systemd-networkd, netplan and RHEL sysconfig files, which must hold exactly the
 * intended addresses, default routes, DNS servers and MTU; netplan's own generator must accept the netplan
 * output. Nothing boots: cloud-init's renderers are the referee.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { newInstanceId, renderMetaData, renderNetworkConfig, renderUserData } from '../../service/failover/network/cloud-init.js';
import { parseMappings, resolveNicPlan } from '../../service/failover/network/mappings.js';
import { validateVmNics } from '../../service/failover/network/settings.js';
import { scratchDir } from '../helpers.js';

const execFileP = promisify(execFile);

const nics = validateVmNics([
  { mac: '52:54:00:12:34:56', test: { mode: 'static', addresses: ['192.0.2.10/24', '198.51.100.20/25', '2001:db8:10::10/64'], gateway4: '192.0.2.1', gateway6: '2001:db8:10::1', dns: ['192.0.2.53', '2001:db8:10::53'], search: ['dr.example'], mtu: 1400 } },
  { mac: '52:54:00:12:34:57', test: { mode: 'dhcp' } },
  { mac: '52:54:00:12:34:58', test: { mode: 'dhcp', dhcp6: true, mtu: 9000 } },
]);
const plans = resolveNicPlan(nics, [], 'test');

let scratch: Awaited<ReturnType<typeof scratchDir>>;
beforeAll(async () => { scratch = await scratchDir('lifeboat-netcfg-'); });
afterAll(async () => { await scratch?.remove(); });

/** Runs `cloud-init devel net-convert` on a network-config text; returns the output directory. */
async function netConvert(config: string, distro: 'debian' | 'rhel', output: 'eni' | 'networkd' | 'netplan' | 'sysconfig', tag: string): Promise<string> {
  const input = join(scratch.path, `${tag}.yaml`);
  const out = join(scratch.path, `${tag}-${output}`);
  await writeFile(input, config);
  await execFileP('cloud-init', ['devel', 'net-convert', '-p', input, '-k', 'yaml', '-d', out, '-D', distro, '-O', output]);
  return out;
}

async function filesUnder(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const path = join(e.parentPath, e.name);
    out[path.slice(dir.length)] = await readFile(path, 'utf8');
  }
  return out;
}

const values = (text: string, key: string) => text.split('\n').filter((l) => l.startsWith(`${key}=`)).map((l) => l.slice(key.length + 1));

describe('network-config rendered by cloud-init', () => {
  const config = renderNetworkConfig(plans);

  it('is version 2 with NICs matched by MAC and quoted MACs', () => {
    const doc = parse(config) as { version: number; ethernets: Record<string, Record<string, unknown>> };
    expect(doc.version).toBe(2);
    expect(Object.keys(doc.ethernets)).toEqual(['dr0', 'dr1', 'dr2']);
    expect(doc.ethernets.dr0).toMatchObject({ match: { macaddress: '52:54:00:12:34:56' }, 'set-name': 'dr0', routes: [{ to: '0.0.0.0/0', via: '192.0.2.1' }], gateway6: '2001:db8:10::1' });
    expect(config).toContain('macaddress: "52:54:00:12:34:56"');
    expect(config).not.toContain('default');
  });

  it('renders ifupdown (eni) with exactly the addresses, default routes, DNS and MTU', async () => {
    const files = await filesUnder(await netConvert(config, 'debian', 'eni', 'main'));
    const eni = files['/etc/network/interfaces.d/50-cloud-init']!;
    const stanzas = eni.split(/\n(?=auto |iface |# control-alias)/);
    const dr0 = stanzas.filter((s) => /iface dr0 /.test(s)).join('\n');
    expect([...dr0.matchAll(/^\s+address (\S+)$/gm)].map((m) => m[1]).sort()).toEqual(['192.0.2.10/24', '198.51.100.20/25', '2001:db8:10::10/64']);
    expect([...dr0.matchAll(/post-up route add (.*) \|\| true/g)].map((m) => m[1])).toEqual(['default gw 192.0.2.1']);
    expect([...dr0.matchAll(/^\s+gateway (\S+)$/gm)].map((m) => m[1])).toEqual(['2001:db8:10::1']);
    expect(dr0).toMatch(/^\s+dns-nameservers 192\.0\.2\.53 2001:db8:10::53$/m);
    expect(dr0).toMatch(/^\s+dns-search dr\.example$/m);
    expect(dr0).toMatch(/^\s+mtu 1400$/m);
    expect(dr0).not.toContain('::/64 gw');
    expect(eni).toMatch(/^iface dr1 inet dhcp$/m);
    expect(eni).not.toMatch(/iface dr1 inet6/);
    const dr2 = stanzas.filter((s) => /iface dr2 /.test(s)).join('\n');
    expect(dr2).toMatch(/^iface dr2 inet dhcp$/m);
    expect(dr2).toMatch(/^iface dr2 inet6 dhcp$/m);
    expect(dr2).toMatch(/^\s+mtu 9000$/m);
    expect(files['/etc/udev/rules.d/70-persistent-net.rules']).toContain('ATTR{address}=="52:54:00:12:34:56", NAME="dr0"');
  });

  it('renders systemd-networkd with exactly the addresses, default routes, DNS and MTU', async () => {
    const files = await filesUnder(await netConvert(config, 'debian', 'networkd', 'main'));
    const dr0 = files['/etc/systemd/network/10-cloud-init-dr0.network']!;
    expect(values(dr0, 'MACAddress')).toEqual(['52:54:00:12:34:56']);
    expect(values(dr0, 'Address').sort()).toEqual(['192.0.2.10/24', '198.51.100.20/25', '2001:db8:10::10/64']);
    expect(values(dr0, 'Gateway').sort()).toEqual(['192.0.2.1', '2001:db8:10::1']);
    expect(values(dr0, 'Destination')).toEqual(['0.0.0.0/0']);
    expect(values(dr0, 'DNS')).toEqual(['192.0.2.53 2001:db8:10::53']);
    expect(values(dr0, 'Domains')).toEqual(['dr.example']);
    expect(values(dr0, 'MTUBytes')).toEqual(['1400']);
    expect(values(dr0, 'DHCP')).toEqual(['no']);
    const dr1 = files['/etc/systemd/network/10-cloud-init-dr1.network']!;
    expect(values(dr1, 'DHCP')).toEqual(['ipv4']);
    expect(values(dr1, 'Address')).toEqual([]);
    expect(values(dr1, 'MTUBytes')).toEqual([]);
    const dr2 = files['/etc/systemd/network/10-cloud-init-dr2.network']!;
    expect(values(dr2, 'DHCP')).toEqual(['yes']);
    expect(values(dr2, 'MTUBytes')).toEqual(['9000']);
  });

  it('renders RHEL sysconfig with exactly the addresses, default routes, DNS and MTU', async () => {
    const files = await filesUnder(await netConvert(config, 'rhel', 'sysconfig', 'main'));
    const ifcfg = files['/etc/sysconfig/network-scripts/ifcfg-dr0']!;
    expect([...values(ifcfg, 'IPADDR'), ...values(ifcfg, 'IPADDR1')]).toEqual(['192.0.2.10', '198.51.100.20']);
    expect([...values(ifcfg, 'NETMASK'), ...values(ifcfg, 'NETMASK1')]).toEqual(['255.255.255.0', '255.255.255.128']);
    expect(values(ifcfg, 'IPV6ADDR')).toEqual(['2001:db8:10::10/64']);
    expect(values(ifcfg, 'IPV6ADDR_SECONDARIES')).toEqual([]);
    expect(values(ifcfg, 'GATEWAY')).toEqual(['192.0.2.1']);
    expect(values(ifcfg, 'IPV6_DEFAULTGW')).toEqual(['2001:db8:10::1']);
    expect([...values(ifcfg, 'DNS1'), ...values(ifcfg, 'DNS2'), ...values(ifcfg, 'DNS3')]).toEqual(['192.0.2.53', '2001:db8:10::53']);
    expect(values(ifcfg, 'MTU')).toEqual(['1400']);
    expect(values(ifcfg, 'HWADDR')).toEqual(['52:54:00:12:34:56']);
    expect(values(ifcfg, 'IPV6_FORCE_ACCEPT_RA')).toEqual(['no']);
    // No other route than the defaults: the route files are empty but for their comments.
    for (const name of ['route-dr0', 'route6-dr0']) {
      const routes = (files[`/etc/sysconfig/network-scripts/${name}`] ?? '').split('\n').filter((l) => l.trim() && !l.startsWith('#'));
      expect(routes, name).toEqual([]);
    }
    expect(files['/etc/resolv.conf']).toMatch(/^nameserver 192\.0\.2\.53\nnameserver 2001:db8:10::53\nsearch dr\.example$/m);
    expect(values(files['/etc/sysconfig/network-scripts/ifcfg-dr1']!, 'BOOTPROTO')).toEqual(['dhcp']);
    const dr2 = files['/etc/sysconfig/network-scripts/ifcfg-dr2']!;
    expect(values(dr2, 'BOOTPROTO')).toEqual(['dhcp']);
    expect(values(dr2, 'DHCPV6C')).toEqual(['yes']);
    expect(values(dr2, 'MTU')).toEqual(['9000']);
  });

  it('renders netplan, which netplan generate turns into networkd files with the addresses', async () => {
    const files = await filesUnder(await netConvert(config, 'debian', 'netplan', 'main'));
    const netplan = files['/etc/netplan/50-cloud-init.yaml']!;
    const doc = parse(netplan) as { network: { ethernets: Record<string, Record<string, unknown>> } };
    expect(doc.network.ethernets.dr0).toMatchObject({
      addresses: ['192.0.2.10/24', '198.51.100.20/25', '2001:db8:10::10/64'],
      routes: [{ to: '0.0.0.0/0', via: '192.0.2.1' }],
      gateway6: '2001:db8:10::1',
      nameservers: { addresses: ['192.0.2.53', '2001:db8:10::53'], search: ['dr.example'] },
      mtu: 1400,
      match: { macaddress: '52:54:00:12:34:56' },
      'accept-ra': false,
    });
    expect(doc.network.ethernets.dr1).toMatchObject({ dhcp4: true, dhcp6: false });

    const root = join(scratch.path, 'netplan-root');
    await mkdir(join(root, 'etc', 'netplan'), { recursive: true });
    const file = join(root, 'etc', 'netplan', '50-cloud-init.yaml');
    await writeFile(file, netplan);
    await chmod(file, 0o600);
    await execFileP('netplan', ['generate', '--root-dir', root]);
    const generated = await filesUnder(join(root, 'run', 'systemd', 'network'));
    const dr0 = Object.entries(generated).find(([name]) => name.endsWith('-dr0.network'))?.[1];
    expect(dr0, Object.keys(generated).join(', ')).toBeDefined();
    expect(values(dr0!, 'Address').sort()).toEqual(['192.0.2.10/24', '198.51.100.20/25', '2001:db8:10::10/64']);
    expect(values(dr0!, 'Gateway').sort()).toEqual(['192.0.2.1', '2001:db8:10::1']);
    expect(values(dr0!, 'DNS')).toEqual(['192.0.2.53', '2001:db8:10::53']);
    expect(values(dr0!, 'Domains')).toEqual(['dr.example']);
    expect(values(dr0!, 'IPv6AcceptRA')).toEqual(['no']);
    const link = Object.entries(generated).find(([name]) => name.endsWith('-dr0.link'))?.[1];
    expect(link && values(link, 'MTUBytes')).toEqual(['1400']);
    const dr1 = Object.entries(generated).find(([name]) => name.endsWith('-dr1.network'))?.[1];
    expect(dr1 && values(dr1, 'DHCP')).toEqual(['ipv4']);
    expect(doc.network.ethernets.dr2).toMatchObject({ dhcp4: true, dhcp6: true, mtu: 9000 });
    const dr2 = Object.entries(generated).find(([name]) => name.endsWith('-dr2.network'))?.[1];
    expect(dr2 && values(dr2, 'DHCP')).toEqual(['yes']);
  });

  it('renders a plan made from a mapping (an unplanned failover re-IPed by the tenant\'s table)', async () => {
    const mappings = parseMappings([
      { kind: 'production', source: '192.168.10.0/24', target: '10.50.10.0/24', gateway: '10.50.10.1', dns: ['10.50.0.53'], search: ['dr.example'], network: 'dr-prod' },
      { kind: 'production', source: 'fd00:10::/64', target: '2001:db8:50::/64', gateway: '2001:db8:50::1' },
    ]);
    const mapped = resolveNicPlan(validateVmNics([{ mac: '52:54:00:12:34:56' }]), mappings, 'production', { '52:54:00:12:34:56': ['192.168.10.7/24', '192.168.10.8/24', 'fd00:10::7/64'] });
    const files = await filesUnder(await netConvert(renderNetworkConfig(mapped), 'debian', 'networkd', 'mapped'));
    const dr0 = files['/etc/systemd/network/10-cloud-init-dr0.network']!;
    expect(values(dr0, 'Address').sort()).toEqual(['10.50.10.7/24', '10.50.10.8/24', '2001:db8:50::7/64']);
    expect(values(dr0, 'Gateway').sort()).toEqual(['10.50.10.1', '2001:db8:50::1']);
    expect(values(dr0, 'DNS')).toEqual(['10.50.0.53']);
  });

  it('why the IPv6 default route is gateway6: cloud-init 22.4 renders a route to ::/0 as ::/64 and rejects `to: default`', async () => {
    const { stdout } = await execFileP('cloud-init', ['--version']);
    expect(stdout + '').toMatch(/ 22\.4/);
    const asRoute = config.replace(/ {4}gateway6: "([^"]+)"\n/, '').replace('        via: "192.0.2.1"\n', '        via: "192.0.2.1"\n      - to: "::/0"\n        via: "2001:db8:10::1"\n');
    expect(asRoute).toContain('to: "::/0"');
    const networkd = await filesUnder(await netConvert(asRoute, 'debian', 'networkd', 'as-route'));
    expect(values(networkd['/etc/systemd/network/10-cloud-init-dr0.network']!, 'Destination')).toContain('::/64');
    const withDefault = config.replace('to: "0.0.0.0/0"', 'to: "default"');
    await expect(netConvert(withDefault, 'debian', 'networkd', 'default')).rejects.toThrow(/default/);
  });
});

describe('meta-data and user-data', () => {
  it('gives a fresh instance id per failover and a minimal cloud-config', () => {
    const a = newInstanceId('fo-1');
    expect(a).toMatch(/^lifeboat-fo-1-[0-9a-f-]{36}$/);
    expect(newInstanceId('fo-1')).not.toBe(a);
    expect(parse(renderMetaData({ instanceId: a, hostname: 'web1' }))).toEqual({ 'instance-id': a, 'local-hostname': 'web1' });
    expect(renderUserData()).toBe('#cloud-config\n');
    const report = parse(renderUserData({ consoleReport: true })) as { runcmd: string[][] };
    expect(report.runcmd[0]!.slice(0, 2)).toEqual(['sh', '-c']);
    expect(report.runcmd[0]![2]).toContain('ip -6 -j route');
    expect(() => renderMetaData({ instanceId: a, hostname: 'web1; reboot' })).toThrow(/hostname: host name "web1; reboot" may hold only/);
    expect(() => renderMetaData({ instanceId: 'x"y', hostname: 'web1' })).toThrow(/instance-id/);
    expect(() => renderUserData({ consoleReport: true, consoleDevice: '/dev/ttyS0; reboot' })).toThrow(/consoleDevice/);
  });
});
