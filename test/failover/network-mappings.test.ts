/** Network mappings (source subnet → DR subnet, host part kept) and the IP plan with the origin of every value. */
import { describe, expect, it } from 'vitest';
import { LifeboatError } from '../../shared/errors.js';
import { mapAddress, parseMappings, resolveNicPlan } from '../../service/failover/network/mappings.js';
import { validateVmNics } from '../../service/failover/network/settings.js';

const m4 = { kind: 'test', source: '192.168.10.0/24', target: '10.50.10.0/24', gateway: '10.50.10.1', dns: ['10.50.0.53'], search: ['dr.example'], network: 'dr-test' };
const m6 = { kind: 'test', source: 'fd00:10::/64', target: '2001:db8:50::/64', gateway: '2001:db8:50::1', dns: ['2001:db8:50::53'], network: 'dr-test' };
const mProd = { kind: 'production', source: '192.168.10.0/24', target: '10.60.10.0/24', gateway: '10.60.10.1', network: 'dr-prod' };
const mappings = parseMappings([m4, m6, mProd]);
const macA = '52:54:00:00:00:0a';
const macB = '52:54:00:00:00:0b';

function thrown(fn: () => unknown): LifeboatError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(LifeboatError);
    expect((err as Error).message).not.toContain('\n');
    return err as LifeboatError;
  }
  throw new Error('expected a refusal');
}

describe('network mappings', () => {
  it('keeps the host part, IPv4 and IPv6, per kind, longest prefix first', () => {
    expect(mapAddress('192.168.10.7', mappings, 'test')).toEqual({ address: '10.50.10.7/24', origin: 'mapping 192.168.10.0/24→10.50.10.0/24' });
    expect(mapAddress('192.168.10.7', mappings, 'production')?.address).toBe('10.60.10.7/24');
    expect(mapAddress('fd00:10::abcd:7', mappings, 'test')?.address).toBe('2001:db8:50::abcd:7/64');
    expect(mapAddress('192.168.11.7', mappings, 'test')).toBeUndefined();
    const nested = parseMappings([{ kind: 'test', source: '172.16.0.0/12', target: '10.128.0.0/12' }, { kind: 'test', source: '172.16.5.0/24', target: '10.99.5.0/24' }]);
    expect(mapAddress('172.16.5.9', nested, 'test')?.address).toBe('10.99.5.9/24');
    expect(mapAddress('172.17.1.2', nested, 'test')?.address).toBe('10.129.1.2/12');
  });

  it.each([
    ['unequal prefixes', [{ ...m4, target: '10.50.0.0/16' }], 'mappings[0].target: prefix /16 differs from the source\'s /24'],
    ['mixed families', [{ ...m4, target: '2001::/24' }], 'mappings[0].target: 2001::/24 is IPv6 but the source 192.168.10.0/24 is IPv4'],
    ['a subnet with host bits', [{ ...m4, source: '192.168.10.5/24' }], 'mappings[0].source: 192.168.10.5/24 is not a network address (did you mean 192.168.10.0/24?)'],
    ['an off-link gateway', [{ ...m4, gateway: '10.50.11.1' }], 'mappings[0].gateway: 10.50.11.1 is off-link: it is not inside 10.50.10.0/24'],
    ['the broadcast address as gateway', [{ ...m4, gateway: '10.50.10.255' }], 'mappings[0].gateway: 10.50.10.255/24 is the broadcast address of 10.50.10.0/24'],
    ['a malformed DNS server', [{ ...m4, dns: ['10.50.0.300'] }], 'mappings[0].dns[0]: 10.50.0.300 is not an IP address'],
    ['a network name with metacharacters', [{ ...m4, network: 'dr;rm -rf /' }], 'mappings[0].network: network name "dr;rm -rf /" may hold only'],
    ['one source twice', [m4, { ...m4, target: '10.51.10.0/24', gateway: undefined }], 'mappings[1].source: 192.168.10.0/24 is already mapped by mappings[0] (test)'],
    ['overlapping targets', [m4, { ...m4, source: '192.168.0.0/16', target: '10.50.0.0/16' }], 'mappings[1].target: 10.50.0.0/16 overlaps 10.50.10.0/24 of mappings[0] (test)'],
  ])('refuses %s', (_name, list, expected) => {
    const err = thrown(() => parseMappings(list));
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toContain(expected);
  });

  it('plans a blank NIC from its reported addresses and names where each value came from', () => {
    const nics = validateVmNics([{ mac: macA }, { mac: macB, test: { mode: 'dhcp' } }]);
    const plans = resolveNicPlan(nics, mappings, 'test', { '52-54-00-00-00-0A': ['192.168.10.7/24', '192.168.10.8', 'fd00:10::7/64', 'fe80::1/64', '172.31.0.1/16'] });
    const origin4 = 'mapping 192.168.10.0/24→10.50.10.0/24';
    const origin6 = 'mapping fd00:10::/64→2001:db8:50::/64';
    expect(plans[0]).toEqual({
      mac: macA,
      name: 'dr0',
      config: { mode: 'static', addresses: ['10.50.10.7/24', '10.50.10.8/24', '2001:db8:50::7/64'], gateway4: '10.50.10.1', gateway6: '2001:db8:50::1', dns: ['10.50.0.53', '2001:db8:50::53'], search: ['dr.example'], network: 'dr-test' },
      values: [
        { field: 'mode', value: 'static', from: origin4 },
        { field: 'addresses[0]', value: '10.50.10.7/24', from: origin4 },
        { field: 'addresses[1]', value: '10.50.10.8/24', from: origin4 },
        { field: 'addresses[2]', value: '2001:db8:50::7/64', from: origin6 },
        { field: 'gateway4', value: '10.50.10.1', from: origin4 },
        { field: 'gateway6', value: '2001:db8:50::1', from: origin6 },
        { field: 'dns[0]', value: '10.50.0.53', from: origin4 },
        { field: 'dns[1]', value: '2001:db8:50::53', from: origin6 },
        { field: 'search[0]', value: 'dr.example', from: origin4 },
        { field: 'network', value: 'dr-test', from: origin4 },
      ],
      notes: ['reported address 172.31.0.1 is covered by no test mapping'],
    });
    expect(plans[1]).toEqual({ mac: macB, name: 'dr1', config: { mode: 'dhcp' }, values: [{ field: 'mode', value: 'dhcp', from: 'explicit' }], notes: [] });
    // The production plan of the same VM uses the production mapping.
    expect(resolveNicPlan(nics, mappings, 'production', { [macA]: ['192.168.10.7'] })[0]!.config).toMatchObject({ addresses: ['10.60.10.7/24'], gateway4: '10.60.10.1', network: 'dr-prod' });
  });

  it('falls back to DHCP when nothing maps, and says why', () => {
    const [plan] = resolveNicPlan(validateVmNics([{ mac: macA }]), mappings, 'test', {});
    expect(plan).toMatchObject({ config: { mode: 'dhcp' }, values: [{ field: 'mode', value: 'dhcp', from: 'dhcp' }], notes: ['no address reported or recorded for this NIC'] });
  });

  it('fills the blanks of explicit settings from the mapping whose DR subnet holds the address', () => {
    const nics = validateVmNics([{ mac: macA, test: { mode: 'static', addresses: ['10.50.10.20/24'], dns: ['10.50.0.99'] } }]);
    const [plan] = resolveNicPlan(nics, mappings, 'test');
    expect(plan!.config).toEqual({ mode: 'static', addresses: ['10.50.10.20/24'], gateway4: '10.50.10.1', dns: ['10.50.0.99'], search: ['dr.example'], network: 'dr-test' });
    expect(plan!.values).toContainEqual({ field: 'addresses[0]', value: '10.50.10.20/24', from: 'explicit' });
    expect(plan!.values).toContainEqual({ field: 'dns[0]', value: '10.50.0.99', from: 'explicit' });
    expect(plan!.values).toContainEqual({ field: 'gateway4', value: '10.50.10.1', from: 'mapping 192.168.10.0/24→10.50.10.0/24' });
  });

  it('refuses a mapped address equal to an explicit one, two NICs mapped to one address, and an address another VM holds', () => {
    const explicit = validateVmNics([{ mac: macA, test: { mode: 'static', addresses: ['10.50.10.7/24'] } }, { mac: macB }]);
    const clash = thrown(() => resolveNicPlan(explicit, mappings, 'test', { [macB]: ['192.168.10.7'] }));
    expect(clash.code).toBe('conflict');
    expect(clash.message).toBe('test plan, nic 52:54:00:00:00:0b: address 10.50.10.7 (mapped by 192.168.10.0/24→10.50.10.0/24) is already set explicitly on nic 52:54:00:00:00:0a');

    const blank = validateVmNics([{ mac: macA }, { mac: macB }]);
    expect(thrown(() => resolveNicPlan(blank, mappings, 'test', { [macA]: ['192.168.10.7'], [macB]: ['192.168.10.7'] })).message)
      .toBe('test plan, nic 52:54:00:00:00:0b: address 10.50.10.7 (mapped by 192.168.10.0/24→10.50.10.0/24) is already mapped by 192.168.10.0/24→10.50.10.0/24 on nic 52:54:00:00:00:0a');

    const others = [{ network: 'dr-test', address: '10.50.10.7/24', owner: 'vm db1 nic 52:54:00:00:01:01 (test)' }];
    expect(thrown(() => resolveNicPlan(blank, mappings, 'test', { [macA]: ['192.168.10.7'] }, { otherAddressesInNetwork: others })).message)
      .toBe('test plan, nic 52:54:00:00:00:0a: address 10.50.10.7 in network dr-test is already used by vm db1 nic 52:54:00:00:01:01 (test)');
    // The same address in another DR network is no conflict.
    expect(resolveNicPlan(blank, mappings, 'test', { [macA]: ['192.168.10.7'] }, { otherAddressesInNetwork: [{ ...others[0]!, network: 'dr-other' }] })).toHaveLength(2);
  });

  it('refuses a NIC whose addresses map into two DR networks', () => {
    const split = parseMappings([m4, { ...m6, network: 'dr-elsewhere' }]);
    const err = thrown(() => resolveNicPlan(validateVmNics([{ mac: macA }]), split, 'test', { [macA]: ['192.168.10.7', 'fd00:10::7'] }));
    expect(err.code).toBe('conflict');
    expect(err.message).toBe('test plan, nic 52:54:00:00:00:0a: its addresses map into two DR networks: dr-test (mapping 192.168.10.0/24→10.50.10.0/24) and dr-elsewhere (mapping fd00:10::/64→2001:db8:50::/64)');
  });
});
