/**
 * Who sets each value of a VM's recorded hardware (service/failover/recorded-config.ts), without a
 * catalog: a report fills what no operator set and leaves the operator's values; an operator's write
 * claims what it changes or names, and a read-modify-write leaves the rest as it was; a report never
 * pairs Secure Boot with BIOS; a NIC written back unchanged is unchanged.
 */
import { describe, expect, it } from 'vitest';
import type { VmHardwareRow } from '../../service/catalog/failovers.js';
import { canonicalJson, canonicalSourceAddress, nicChanged, operatorHardware, reportedHardware } from '../../service/failover/recorded-config.js';
import { defaultHardware } from '../../service/failover/spec.js';

const disks = [{ id: 'disk0', virtualSize: 1 << 20, format: 'raw' as const }, { id: 'disk1', virtualSize: 1 << 20, format: 'raw' as const }];
const values = (h: Omit<VmHardwareRow, 'source'>) => {
  const { sources: _s, ...rest } = h;
  return rest;
};

describe('reported hardware', () => {
  it('fills the defaults and records each field as reported; nothing reported, nothing changed', () => {
    expect(reportedHardware(defaultHardware(), { disks })).toBeUndefined();
    const h = reportedHardware(defaultHardware(), { hardware: { cpus: 4, guestOs: 'windows' }, disks: disks.map((d) => ({ ...d, bus: 'sata' as const })) })!;
    expect(h).toMatchObject({ cpus: 4, guestOs: 'windows', memoryMiB: 1024, firmware: 'bios', disks: { disk0: { bus: 'sata', order: 0 }, disk1: { bus: 'sata', order: 1 } } });
    expect(h.sources).toEqual({ cpus: 'reported', guestOs: 'reported', disks: 'reported' });
  });

  it('leaves the operator\'s values and takes the rest', () => {
    const current: VmHardwareRow = { ...defaultHardware(), cpus: 2, memoryMiB: 2048, source: 'operator', sources: { cpus: 'operator', memoryMiB: 'reported' } };
    const h = reportedHardware(current, { hardware: { cpus: 8, memoryMiB: 8192 }, disks })!;
    expect(h).toMatchObject({ cpus: 2, memoryMiB: 8192, sources: { cpus: 'operator', memoryMiB: 'reported' } });
  });

  it('does not pair Secure Boot with BIOS when the other half is the operator\'s', () => {
    const bios: VmHardwareRow = { ...defaultHardware(), source: 'operator', sources: { firmware: 'operator' } };
    const h = reportedHardware(bios, { hardware: { firmware: 'uefi', secureBoot: true, cpus: 2 }, disks })!;
    expect(h).toMatchObject({ firmware: 'bios', secureBoot: false, cpus: 2 });
    expect(h.sources).toEqual({ firmware: 'operator', cpus: 'reported' });
    const secure: VmHardwareRow = { ...defaultHardware(), firmware: 'uefi', secureBoot: true, source: 'operator', sources: { secureBoot: 'operator', firmware: 'reported' } };
    expect(reportedHardware(secure, { hardware: { firmware: 'bios' }, disks })).toMatchObject({ firmware: 'uefi', secureBoot: true, sources: { secureBoot: 'operator', firmware: 'reported' } });
  });
});

describe('an operator\'s hardware', () => {
  const reported: VmHardwareRow = { ...defaultHardware(), cpus: 4, memoryMiB: 4096, source: 'reported', sources: { cpus: 'reported', memoryMiB: 'reported' } };

  it('claims the fields it changes; those written back as they stand keep their source', () => {
    const h = operatorHardware(reported, { ...values(reported), memoryMiB: 8192 });
    expect(h.sources).toEqual({ cpus: 'reported', memoryMiB: 'operator' });
    // jsonb hands objects back with their keys in another order: still unchanged.
    const probes = operatorHardware({ ...reported, readyProbes: [{ port: 22, kind: 'tcp', host: 'h' }] }, { ...values(reported), readyProbes: [{ kind: 'tcp', host: 'h', port: 22 }] });
    expect(probes.sources).toEqual({ cpus: 'reported', memoryMiB: 'reported' });
  });

  it('claims a field named operator\'s as it stands (pinned), and ignores other names', () => {
    const h = operatorHardware(reported, values(reported), { cpus: 'operator', memoryMiB: 'default', firmware: 'reported' });
    expect(h.sources).toEqual({ cpus: 'operator', memoryMiB: 'reported' });
  });
});

describe('NICs and addresses', () => {
  const nic = { position: 0, model: 'virtio', settings: { test: { mode: 'dhcp', network: 'n' } }, reportedAddresses: ['192.0.2.1/24'] };

  it('sees a NIC written back unchanged as unchanged, and any difference as a change', () => {
    expect(nicChanged(nic, { ...nic, settings: { test: { network: 'n', mode: 'dhcp' } } })).toBe(false);
    expect(nicChanged(undefined, nic)).toBe(true);
    expect(nicChanged(nic, { ...nic, position: 1 })).toBe(true);
    expect(nicChanged(nic, { ...nic, model: 'e1000' })).toBe(true);
    expect(nicChanged(nic, { ...nic, reportedAddresses: [] })).toBe(true);
    expect(nicChanged(nic, { ...nic, settings: {} })).toBe(true);
  });

  it('keeps source addresses in canonical text and refuses what is not one', () => {
    expect(canonicalSourceAddress('2001:DB8:0::7/64')).toBe('2001:db8::7/64');
    expect(canonicalSourceAddress('192.168.10.7')).toBe('192.168.10.7');
    expect(canonicalSourceAddress('192.168.10.7/33')).toEqual({ reason: '192.168.10.7/33: prefix is out of range 1..32' });
    expect(typeof canonicalSourceAddress('web01')).toBe('object');
    expect(canonicalJson({ b: [{ d: 1, c: 2 }], a: null })).toBe('{"a":null,"b":[{"c":2,"d":1}]}');
  });
});
