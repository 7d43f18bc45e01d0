/**
 * libvirt's XML for the libvirt source: values with XML's special characters are escaped by the
 * builder and come back whole through a parser; dumpxml of a domain gives its disks, machine and NICs.
 */
import { describe, expect, it } from 'vitest';
import { XMLParser } from 'fast-xml-parser';
import { backupSocket, backupXml, checkpointDisks, checkpointXml, parseDomain } from './libvirt-xml.js';

const hostile = `/tmp/a'b"c<d>&e]]>f`;

describe('libvirt XML', () => {
  it('escapes every value it writes: a socket or scratch path with quotes, <, > and & comes back whole', () => {
    const xml = backupXml(hostile, [{ target: 'vda', incremental: `lifeboat-1"/><x a="`, scratch: `${hostile}.qcow2` }, { target: 'vdb', incremental: undefined, scratch: '/s' }], ['vdc']);
    const parsed = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@_' }).parse(xml) as {
      domainbackup: { '@_mode': string; disks: { disk: Array<Record<string, unknown> & { scratch?: { '@_file': string } }> } };
    };
    expect(parsed.domainbackup['@_mode']).toBe('pull');
    expect(backupSocket(xml)).toBe(hostile);
    const [vda, vdb, vdc] = parsed.domainbackup.disks.disk;
    expect(vda).toMatchObject({ '@_name': 'vda', '@_backup': 'yes', '@_backupmode': 'incremental', '@_incremental': 'lifeboat-1"/><x a="', scratch: { '@_file': `${hostile}.qcow2` } });
    expect(vdb).toMatchObject({ '@_name': 'vdb', '@_backupmode': 'full' });
    expect(vdb!['@_incremental']).toBeUndefined();
    expect(vdc).toEqual({ '@_name': 'vdc', '@_backup': 'no' });
    expect(xml).not.toContain('<x ');
  });

  it('a checkpoint has a bitmap on the tracked disks and none on the others', () => {
    const xml = checkpointXml('lifeboat-7', ['vda', 'vdb'], ['vdc']);
    expect(checkpointDisks(xml)).toEqual(['vda', 'vdb']);
    expect(xml).toContain('<disk name="vdc" checkpoint="no"/>');
  });

  it('reads the domain from dumpxml', () => {
    const info = parseDomain(`<domain type='kvm' id='1'><name>web&amp;01</name><memory unit='KiB'>4194304</memory><vcpu placement='static'>4</vcpu>
      <os firmware='efi'><type arch='x86_64' machine='q35'>hvm</type><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader></os>
      <devices>
        <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/vm/a&apos;b.qcow2' index='2'/><target dev='sda' bus='sata'/></disk>
        <disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg/x'/><target dev='sdb' bus='sata'/><readonly/></disk>
        <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='sdc' bus='sata'/><readonly/></disk>
        <interface type='network'><mac address='52:54:00:AA:BB:01'/><model type='e1000e'/></interface>
        <interface type='user'><mac address='52:54:00:aa:bb:02'/><model type='ne2k_pci'/></interface>
        <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
      </devices></domain>`);
    expect(info.name).toBe('web&01');
    expect(info.disks).toEqual([
      { target: 'sda', device: 'disk', file: "/vm/a'b.qcow2", format: 'qcow2', bus: 'sata', readOnly: false },
      { target: 'sdb', device: 'disk', file: '/dev/vg/x', format: 'raw', bus: 'sata', readOnly: true },
      { target: 'sdc', device: 'cdrom', file: '', format: 'raw', bus: 'sata', readOnly: true },
    ]);
    expect(info.hardware).toEqual({ firmware: 'uefi', cpus: 4, memoryMiB: 4096, diskBus: 'sata' });
    expect(info.nics).toEqual([{ mac: '52:54:00:aa:bb:01', model: 'e1000', addresses: [] }, { mac: '52:54:00:aa:bb:02', addresses: [] }]);
    expect(info.guestAgent).toBe(true);
    expect(() => parseDomain('<network><name>x</name></network>')).toThrow(/not a libvirt domain/);
  });
});
