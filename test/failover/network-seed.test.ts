/**
 * Seed media: the NoCloud `cidata` ISO and the `config-2` config drive, read back with isoinfo (from
 * genisoimage) and xorriso as independent readers: volume labels, file names as a guest sees them, contents.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderNoCloudFiles } from '../../service/failover/network/cloud-init.js';
import { resolveNicPlan } from '../../service/failover/network/mappings.js';
import { renderConfigDrive, writeConfigDrive, writeNoCloudSeed } from '../../service/failover/network/seed.js';
import { validateVmNics } from '../../service/failover/network/settings.js';
import { scratchDir } from '../helpers.js';

const execFileP = promisify(execFile);

const plans = resolveNicPlan(validateVmNics([
  { mac: '52:54:00:12:34:56', test: { mode: 'static', addresses: ['192.0.2.10/24', '198.51.100.20/25', '2001:db8:10::10/64'], gateway4: '192.0.2.1', gateway6: '2001:db8:10::1', dns: ['192.0.2.53', '2001:db8:10::53'], search: ['dr.example'], mtu: 1400 } },
  { mac: '52:54:00:12:34:57', test: { mode: 'dhcp' } },
]), [], 'test');

let scratch: Awaited<ReturnType<typeof scratchDir>>;
beforeAll(async () => { scratch = await scratchDir('lifeboat-seed-'); });
afterAll(async () => { await scratch?.remove(); });

async function isoinfo(args: string[]): Promise<string> {
  return (await execFileP('isoinfo', args, { maxBuffer: 4 << 20 })).stdout;
}

function volumeId(info: string): string | undefined {
  return /^Volume id: (.*)$/m.exec(info)?.[1]?.trim();
}

describe('seed media', () => {
  it('writes a cidata ISO (ISO9660, Joliet, Rock Ridge) holding the three NoCloud files', async () => {
    const files = renderNoCloudFiles(plans, { instanceId: 'lifeboat-fo1-0001', hostname: 'web1' });
    const iso = await writeNoCloudSeed(scratch.path, files);
    expect(iso).toBe(`${scratch.path}/cidata.iso`);
    const info = await isoinfo(['-d', '-i', iso]);
    expect(volumeId(info)).toBe('cidata');
    expect(info).toMatch(/Joliet with UCS level 3 found/);
    expect(info).toMatch(/Rock Ridge signatures version \d+ found/);
    // Names as Rock Ridge readers (Linux) see them, and as Joliet readers (Windows) see them.
    const rr = await isoinfo(['-R', '-f', '-i', iso]);
    expect(rr.split('\n').filter(Boolean).sort()).toEqual(['/meta-data', '/network-config', '/user-data']);
    const joliet = await isoinfo(['-J', '-f', '-i', iso]);
    expect(joliet.split('\n').filter(Boolean).sort()).toEqual(['/meta-data', '/network-config', '/user-data']);
    for (const name of ['meta-data', 'user-data', 'network-config'] as const) {
      expect(await isoinfo(['-R', '-x', `/${name}`, '-i', iso])).toBe(files[name]);
    }
    // xorriso, a second reader, agrees on the label.
    const { stdout } = await execFileP('xorriso', ['-indev', iso, '-pvd_info']);
    expect(stdout + '').toMatch(/^Volume Id\s*: cidata$/m);
    // Built under a temporary name: nothing but the ISO is left beside it.
    expect((await readdir(scratch.path)).filter((n) => n.includes('cidata'))).toEqual(['cidata.iso']);
    // A second call replaces it.
    await writeNoCloudSeed(scratch.path, { ...files, 'user-data': '#cloud-config\n' });
    expect(await isoinfo(['-R', '-x', '/user-data', '-i', iso])).toBe('#cloud-config\n');
  });

  it('writes a config-2 drive with meta_data.json and network_data.json as cloudbase-init reads them', async () => {
    const uuid = randomUUID();
    const { path, notes } = await writeConfigDrive(scratch.path, { uuid, hostname: 'win1', nics: plans });
    const info = await isoinfo(['-d', '-i', path]);
    expect(volumeId(info)).toBe('config-2');
    const listed = (await isoinfo(['-J', '-f', '-i', path])).split('\n').filter(Boolean).sort();
    expect(listed).toEqual(['/openstack', '/openstack/latest', '/openstack/latest/meta_data.json', '/openstack/latest/network_data.json']);
    const meta = JSON.parse(await isoinfo(['-J', '-x', '/openstack/latest/meta_data.json', '-i', path]));
    expect(meta).toMatchObject({ uuid, hostname: 'win1', name: 'win1' });
    const net = JSON.parse(await isoinfo(['-R', '-x', '/openstack/latest/network_data.json', '-i', path]));
    expect(net.links).toEqual([
      { id: 'dr0', type: 'phy', ethernet_mac_address: '52:54:00:12:34:56', mtu: 1400 },
      { id: 'dr1', type: 'phy', ethernet_mac_address: '52:54:00:12:34:57', mtu: null },
    ]);
    const strip = (n: Record<string, unknown>) => { const { network_id: _id, ...rest } = n; return rest; };
    expect(net.networks.map(strip)).toEqual([
      { id: 'dr0-ipv4', type: 'ipv4', link: 'dr0', ip_address: '192.0.2.10', netmask: '255.255.255.0', routes: [{ network: '0.0.0.0', netmask: '0.0.0.0', gateway: '192.0.2.1' }], services: [{ type: 'dns', address: '192.0.2.53' }] },
      { id: 'dr0-ipv6', type: 'ipv6', link: 'dr0', ip_address: '2001:db8:10::10', netmask: 'ffff:ffff:ffff:ffff::', routes: [{ network: '::', netmask: '::', gateway: '2001:db8:10::1' }], services: [{ type: 'dns', address: '2001:db8:10::53' }] },
      { id: 'dr1-ipv4', type: 'ipv4_dhcp', link: 'dr1' },
    ]);
    expect(net.services).toEqual([{ type: 'dns', address: '192.0.2.53' }, { type: 'dns', address: '2001:db8:10::53' }]);
    // What a Windows guest through cloudbase-init will not get is said, not hidden.
    expect(notes).toEqual([
      'nic 52:54:00:12:34:56: only 192.0.2.10/24 of its IPv4 addresses reaches a Windows guest through cloudbase-init (left out: 198.51.100.20/25)',
      'nic 52:54:00:12:34:56: search domains (dr.example) are not carried by network_data.json',
      'nic 52:54:00:12:34:57: DHCP: cloudbase-init leaves the adapter as it is; a Windows NIC that was static on the primary keeps its old address',
    ]);
  });

  it('says when Windows will cut the host name, and writes DHCPv6 as an ipv6_dhcp network', () => {
    const dhcp6 = resolveNicPlan(validateVmNics([{ mac: '52:54:00:12:34:58', test: { mode: 'dhcp', dhcp6: true } }]), [], 'test');
    const { networkData, notes } = renderConfigDrive({ uuid: randomUUID(), hostname: 'accounting-frontend.dr.example', nics: dhcp6 });
    expect((networkData.networks as { type: string }[]).map((n) => n.type)).toEqual(['ipv4_dhcp', 'ipv6_dhcp']);
    expect(notes[0]).toBe('hostname accounting-frontend.dr.example: Windows (cloudbase-init by default) keeps only its first 15 characters, accounting-fron');
  });

  it('refuses a config drive identity that is not a UUID and host name', () => {
    expect(() => renderConfigDrive({ uuid: 'not-a-uuid', hostname: 'win1', nics: plans })).toThrow(/uuid: "not-a-uuid" is not a lower-case UUID/);
    expect(() => renderConfigDrive({ uuid: randomUUID(), hostname: 'win1$(calc)', nics: plans })).toThrow(/hostname: host name "win1\$\(calc\)" may hold only/);
  });
});
