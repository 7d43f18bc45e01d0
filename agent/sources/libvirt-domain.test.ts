/**
 * `virsh domifaddr --source agent --full` read as the guest's addresses by MAC: every address of a
 * NIC kept with its prefix, loopback and link-local IPv6 left out, lines not in the table's shape
 * ignored (the real table is read from a booted guest in test/agent/libvirt-guest.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { parseDomifaddr } from './libvirt-domain.js';

describe('parseDomifaddr', () => {
  it('gives each MAC its addresses, without loopback or link-local', () => {
    const table = [
      ' Name       MAC address          Protocol     Address',
      '-------------------------------------------------------------------------------',
      ' lo         00:00:00:00:00:00    ipv4         127.0.0.1/8',
      ' lo         00:00:00:00:00:00    ipv6         ::1/128',
      ' enp1s0     52:54:00:00:0A:02    ipv4         10.0.2.15/24',
      ' enp1s0     52:54:00:00:0A:02    ipv6         fec0::5054:ff:fe00:a02/64',
      ' enp1s0     52:54:00:00:0A:02    ipv6         fe80::5054:ff:fe00:a02/64',
      ' enp2s0     52:54:00:00:0a:03    ipv4         192.0.2.7/24',
      ' enp3s0     52:54:00:00:0a:04    N/A          N/A',
      '',
    ].join('\n');
    expect(parseDomifaddr(table)).toEqual(new Map([
      ['52:54:00:00:0a:02', ['10.0.2.15/24', 'fec0::5054:ff:fe00:a02/64']],
      ['52:54:00:00:0a:03', ['192.0.2.7/24']],
    ]));
  });

  it('gives nothing for an empty table', () => {
    expect(parseDomifaddr(' Name       MAC address          Protocol     Address\n-----------------\n\n').size).toBe(0);
  });
});
