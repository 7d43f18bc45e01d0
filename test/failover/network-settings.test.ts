/** Failover NIC settings: every kind of bad input refused with one line naming the field; good input normalised. */
import { describe, expect, it } from 'vitest';
import { LifeboatError } from '../../shared/errors.js';
import { MaxAddressesPerNic, parseNicSettings, validateVmNics } from '../../service/failover/network/settings.js';

const mac = '52:54:00:12:34:56';
const good = { mode: 'static', addresses: ['192.0.2.10/24', '192.0.2.11/24', '2001:db8:10::10/64'], gateway4: '192.0.2.1', gateway6: '2001:db8:10::1', dns: ['192.0.2.53', '2001:DB8:10::53'], search: ['DR.Example'], mtu: 1400 };

/** The one-line message of the refusal, which must be an invalid_argument LifeboatError. */
function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(LifeboatError);
    expect((err as LifeboatError).code).toBe('invalid_argument');
    const message = (err as Error).message;
    expect(message).not.toContain('\n');
    return message;
  }
  throw new Error('expected a refusal');
}

const withTest = (test: Record<string, unknown>) => [{ mac, test: { ...good, ...test } }];

describe('NIC settings', () => {
  it('accepts a NIC with two IPv4 and one IPv6 address and normalises it', () => {
    const [nic] = validateVmNics([{ mac: '52-54-00-12-34-56', production: { mode: 'dhcp', network: 'prod-net' }, test: good }]);
    expect(nic).toEqual({
      mac,
      production: { mode: 'dhcp', network: 'prod-net' },
      test: { mode: 'static', addresses: ['192.0.2.10/24', '192.0.2.11/24', '2001:db8:10::10/64'], gateway4: '192.0.2.1', gateway6: '2001:db8:10::1', dns: ['192.0.2.53', '2001:db8:10::53'], search: ['dr.example'], mtu: 1400 },
    });
    expect(parseNicSettings({ mac: '525400ABCDEF' }).mac).toBe('52:54:00:ab:cd:ef');
    // /31 and /32 have no network or broadcast address; an IPv6 link-local gateway is on-link.
    expect(validateVmNics(withTest({ addresses: ['192.0.2.0/31', '198.51.100.7/32', '2001:db8::1/64'], gateway4: '192.0.2.1', gateway6: 'fe80::1' }))[0]!.test).toMatchObject({ gateway6: 'fe80::1' });
  });

  it.each([
    ['malformed IPv4', { addresses: ['192.0.2.300/24'] }, 'nics[0].test.addresses[0]: 192.0.2.300 is not an IP address'],
    ['IPv4 shorthand', { addresses: ['10.1/8'] }, 'nics[0].test.addresses[0]: 10.1 is not an IP address'],
    ['leading zeros', { addresses: ['192.0.2.010/24'] }, 'nics[0].test.addresses[0]: 192.0.2.010 is not an IP address'],
    ['malformed IPv6', { addresses: ['2001:db8:::1/64'] }, 'nics[0].test.addresses[0]: 2001:db8:::1 is not an IP address'],
    ['no prefix', { addresses: ['192.0.2.10'] }, 'nics[0].test.addresses[0]: 192.0.2.10 has no prefix length'],
    ['IPv4 prefix out of range', { addresses: ['192.0.2.10/33'] }, 'nics[0].test.addresses[0]: 192.0.2.10/33: prefix /33 is out of range 1..32'],
    ['IPv6 prefix out of range', { addresses: ['192.0.2.10/24', '2001:db8::1/129'] }, 'nics[0].test.addresses[1]: 2001:db8::1/129: prefix /129 is out of range 1..128'],
    ['prefix zero', { addresses: ['192.0.2.10/0'] }, 'prefix /0 is out of range'],
    ['network address', { addresses: ['192.0.2.0/24'] }, 'nics[0].test.addresses[0]: 192.0.2.0/24 is the network address of 192.0.2.0/24'],
    ['broadcast address', { addresses: ['10.0.0.5/24', '10.0.0.255/24'], gateway4: '10.0.0.1', gateway6: undefined }, 'nics[0].test.addresses[1]: 10.0.0.255/24 is the broadcast address of 10.0.0.0/24'],
    ['IPv6 subnet-router anycast', { addresses: ['2001:db8::/64'] }, 'is the subnet-router anycast address of 2001:db8::/64'],
    ['loopback', { addresses: ['127.0.0.5/8'] }, '127.0.0.5 is a loopback address'],
    ['multicast', { addresses: ['ff02::1/64'] }, 'ff02::1 is a multicast address'],
    ['zone id', { addresses: ['fe80::1%eth0/64'] }, 'a zone id'],
    ['same address twice', { addresses: ['192.0.2.10/24', '192.0.2.10/25'] }, 'nics[0].test.addresses[1]: 192.0.2.10 is already addresses[0]'],
    ['no address', { addresses: [] }, 'nics[0].test.addresses: a static NIC needs at least one address'],
    ['off-link IPv4 gateway', { gateway4: '198.51.100.1' }, "nics[0].test.gateway4: 198.51.100.1 is off-link: it is in none of the NIC's IPv4 prefixes (192.0.2.10/24, 192.0.2.11/24)"],
    ['off-link IPv6 gateway', { gateway6: '2001:db8:99::1' }, 'nics[0].test.gateway6: 2001:db8:99::1 is off-link'],
    ['gateway of the wrong family', { gateway4: '2001:db8:10::1' }, 'nics[0].test.gateway4: 2001:db8:10::1 is not an IPv4 address'],
    ['gateway without an address of its family', { addresses: ['192.0.2.10/24'], gateway6: '2001:db8:10::1' }, 'nics[0].test.gateway6: 2001:db8:10::1 cannot be reached: the NIC has no IPv6 address'],
    ["gateway is the NIC's own address", { gateway4: '192.0.2.10' }, "192.0.2.10 is the NIC's own address"],
    ['malformed DNS server', { dns: ['192.0.2.53', 'dns.example'] }, 'nics[0].test.dns[1]: dns.example is not an IP address'],
    ['search domain with a shell metacharacter', { search: ['dr.example;reboot'] }, 'nics[0].test.search[0]: search domain "dr.example;reboot" may hold only letters'],
    ['search domain with a PowerShell subexpression', { search: ['$(Stop-Computer)'] }, 'nics[0].test.search[0]'],
    ['MTU too small', { mtu: 500 }, 'nics[0].test.mtu: 500 is out of range 576..9216'],
    ['MTU too small for IPv6', { mtu: 1000 }, 'nics[0].test.mtu: 1000 is below 1280'],
    ['MTU too large', { mtu: 65000 }, 'nics[0].test.mtu: 65000 is out of range'],
    ['network name with a shell metacharacter', { network: 'dr-net`id`' }, 'nics[0].test.network: network name "dr-net`id`" may hold only letters'],
    ['network name with a PowerShell quote', { network: "dr'; Remove-VM -Name *; '" }, 'nics[0].test.network: network name'],
    ['network name with a space', { network: 'dr net' }, 'nics[0].test.network'],
    ['unknown mode', { mode: 'manual' }, "nics[0].test.mode: expected 'dhcp' or 'static'"],
    ['unknown field', { gateway: '192.0.2.1' }, 'nics[0].test: unknown field "gateway"'],
    ['addresses not a list', { addresses: '192.0.2.10/24' }, 'nics[0].test.addresses: invalid input: expected array'],
  ])('refuses %s', (_name, change, expected) => {
    expect(refusal(() => validateVmNics(withTest(change)))).toContain(expected);
  });

  it('refuses 2,000 addresses on one NIC with one line', () => {
    const addresses = Array.from({ length: 2000 }, (_, i) => `10.${i >> 8}.${i & 255}.1/8`);
    expect(refusal(() => validateVmNics(withTest({ addresses, gateway4: undefined, gateway6: undefined })))).toBe(`nics[0].test.addresses: at most ${MaxAddressesPerNic} addresses per NIC (got 2000)`);
  });

  it.each([
    ['malformed', '52:54:00:12:34', 'nics[0].mac: "52:54:00:12:34" is not a MAC address'],
    ['not hex', '52:54:00:12:34:zz', 'is not a MAC address'],
    ['mixed separators', '52:54-00:12:34:56', 'is not a MAC address'],
    ['multicast', '01:00:5e:00:00:01', 'nics[0].mac: 01:00:5e:00:00:01 is a multicast MAC address'],
    ['broadcast', 'ff:ff:ff:ff:ff:ff', 'is a multicast MAC address'],
    ['all zero', '00:00:00:00:00:00', 'nics[0].mac: 00:00:00:00:00:00 is the all-zero MAC address'],
  ])('refuses a %s MAC', (_name, bad, expected) => {
    expect(refusal(() => validateVmNics([{ mac: bad }]))).toContain(expected);
  });

  it('refuses a MAC twice in one VM, whatever its spelling', () => {
    expect(refusal(() => validateVmNics([{ mac }, { mac: '52-54-00-12-34-57' }, { mac: '52:54:00:12:34:56'.toUpperCase() }]))).toBe('nics[2].mac: 52:54:00:12:34:56 is already the MAC of nics[0]');
  });

  it('refuses an address twice in one DR network, within the VM and against the tenant\'s other VMs', () => {
    const a = { mode: 'static', addresses: ['192.0.2.10/24'], network: 'dr-a' };
    // The same address in two different networks, or in production and test, is fine.
    expect(validateVmNics([{ mac, production: a, test: a }, { mac: '52:54:00:12:34:57', test: { ...a, network: 'dr-b' } }])).toHaveLength(2);
    expect(refusal(() => validateVmNics([{ mac, test: a }, { mac: '52:54:00:12:34:57', test: { ...a, addresses: ['192.0.2.10/25'] } }])))
      .toBe('nics[1].test.addresses[0]: 192.0.2.10 in network dr-a is already used by nics[0].test.addresses[0]');
    const others = [{ network: 'dr-a', address: '192.0.2.10', owner: 'vm web2 nic 52:54:00:00:00:02 (test)' }];
    expect(refusal(() => validateVmNics([{ mac, test: a }], { otherAddressesInNetwork: others })))
      .toBe('nics[0].test.addresses[0]: 192.0.2.10 in network dr-a is already used by vm web2 nic 52:54:00:00:00:02 (test)');
    expect(validateVmNics([{ mac, test: { ...a, network: 'dr-b' } }], { otherAddressesInNetwork: others })).toHaveLength(1);
  });

  it('refuses a list that is not a list, and too many NICs', () => {
    expect(refusal(() => validateVmNics({ mac }))).toBe('nics: expected a list of NICs');
    expect(refusal(() => validateVmNics(Array.from({ length: 40 }, (_, i) => ({ mac: `52:54:00:00:00:${i.toString(16).padStart(2, '0')}` }))))).toContain('at most 32 NICs');
  });
});
