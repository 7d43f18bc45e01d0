/**
 * Public addresses as nftables rules, applied for real in network namespaces this test makes (a
 * client, a router standing in for the failover host, a VM standing in for the failed-over guest;
 * documentation addresses; no traffic leaves the machine): the client reaches an allowed port of the
 * public address and lands on the VM, which sees the client's own address; a port off the list, and
 * the DR address reached directly past the public one, get nothing; the VM's own connections leave
 * with the public address; applying twice leaves one table; after removal no table remains.
 * Also the renderer's and parsers' refusals, and nft accepting every rendered shape.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LifeboatError } from '../../shared/errors.js';
import { failoverOfTable, natTableName, parseAllow, renderNatDelete, renderNatTable } from '../../service/failover/network/nat.js';
import { expandPoolAddresses } from '../../service/failover/network/pool.js';
import { Nft } from '../../service/failover/nft.js';
import { Answered, Client4, Client6, Namespaces, netnsUnavailable, Vm4, Vm6 } from './public-ip-netns.js';

const why = netnsUnavailable();
// CI installs nftables (.ci/run): there the namespaces must be made, never skipped.
if (why && process.env.CI) throw new Error(`public address tests cannot run: ${why}`);
if (why) console.warn(`skipping the public address namespace tests: ${why}`);

const Public4 = '203.0.113.10';
const Public6 = '2001:db8:f::10';

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(LifeboatError);
    return (err as Error).message;
  }
  throw new Error('not refused');
}

describe('allow-lists, pools and table names', () => {
  it('normalises allow-lists and refuses each mistake with one line naming the entry', () => {
    expect(parseAllow(['TCP/22', ' udp/60000-61000', 'icmp', 'tcp/8000-8000'])).toEqual(['tcp/22', 'udp/60000-61000', 'icmp', 'tcp/8000']);
    expect(refusal(() => parseAllow(['tcp/0']))).toBe('allow[0]: port 0 is not from 1 to 65535');
    expect(refusal(() => parseAllow(['tcp/22', 'tcp/70000']))).toBe('allow[1]: port 70000 is not from 1 to 65535');
    expect(refusal(() => parseAllow(['tcp/90-80']))).toBe('allow[0]: the range 90-80 runs backwards');
    expect(refusal(() => parseAllow(['tcp/1-100', 'tcp/80']))).toBe('allow[1]: tcp/80 overlaps allow[0] tcp/1-100');
    expect(refusal(() => parseAllow(['icmp', 'icmp']))).toBe('allow[1]: icmp overlaps allow[0] icmp');
    for (const bad of ['tcp/22; flush ruleset', 'sctp/5', 'tcp', '22', 'tcp/22,23', 'tcp/ 22', 'tcp/-1']) {
      expect(refusal(() => parseAllow([bad]))).toMatch(/^allow\[0\]: ".*" is not tcp\/PORT/);
    }
    expect(refusal(() => parseAllow('tcp/22'))).toMatch(/^allow must be a list/);
    expect(refusal(() => parseAllow(Array.from({ length: 65 }, (_, i) => `tcp/${i + 1}`)))).toBe('allow: at most 64 entries (got 65)');
  });

  it('expands a pool\'s prefixes to the addresses a host may take, and refuses the rest', () => {
    expect(expandPoolAddresses(['203.0.113.16/30', '203.0.113.40', '198.51.100.6/31'])).toEqual(['203.0.113.17', '203.0.113.18', '203.0.113.40', '198.51.100.6', '198.51.100.7']);
    expect(expandPoolAddresses(['2001:db8:f::/126', '2001:DB8:F::10'])).toEqual(['2001:db8:f::1', '2001:db8:f::2', '2001:db8:f::3', '2001:db8:f::10']);
    expect(expandPoolAddresses(['10.0.0.0/22'])).toHaveLength(1022);
    expect(refusal(() => expandPoolAddresses(['10.0.0.0/21']))).toBe('addresses[0]: 10.0.0.0/21 holds 2046 usable addresses; at most 1024 per pool');
    expect(refusal(() => expandPoolAddresses(['2001:db8::/64']))).toMatch(/^addresses\[0\]: 2001:db8::\/64 holds 18446744073709551615 usable addresses/);
    expect(refusal(() => expandPoolAddresses(['203.0.113.17/30']))).toBe('addresses[0]: 203.0.113.17/30 has host bits set (write the prefix as its network address)');
    expect(refusal(() => expandPoolAddresses(['203.0.113.16/30', '203.0.113.18']))).toBe('addresses[1]: 203.0.113.18 is already given by addresses[0]');
    expect(refusal(() => expandPoolAddresses(['127.0.0.1']))).toMatch(/^addresses\[0\]: 127\.0\.0\.1 is a loopback address/);
    expect(refusal(() => expandPoolAddresses(['224.0.0.0/30']))).toMatch(/^addresses\[0\]: 224\.0\.0\.1 is a multicast address/);
    expect(refusal(() => expandPoolAddresses(['203.0.113.1/0']))).toBe('addresses[0]: 203.0.113.1/0 has no prefix length from 1 to 32');
    expect(refusal(() => expandPoolAddresses(['010.0.0.1']))).toBe('addresses[0]: 010.0.0.1 is not an IP address');
    expect(refusal(() => expandPoolAddresses([]))).toMatch(/^addresses must be a non-empty list/);
  });

  it('names each failover\'s table so a host finds its own, and refuses to render anything unchecked', () => {
    expect(natTableName('fo-3f9a-x1')).toBe('lifeboat_fo_3f9a_x1');
    expect(failoverOfTable('lifeboat_fo_3f9a_x1')).toBe('fo-3f9a-x1');
    expect(failoverOfTable('filter')).toBeUndefined();
    expect(() => renderNatTable('filter', [])).toThrow(/not a table name of ours/);
    expect(() => renderNatTable('lifeboat_fo_1', [{ address: '203.0.113.010', drAddress: Vm4, allow: [] }])).toThrow(/not a canonical address/);
    expect(() => renderNatTable('lifeboat_fo_1', [{ address: Public4, drAddress: Vm6, allow: [] }])).toThrow(/different families/);
    expect(() => renderNatTable('lifeboat_fo_1', [{ address: Public4, drAddress: Vm4, allow: ['tcp/22 accept'] }])).toThrow(LifeboatError);
    expect(() => renderNatTable('lifeboat_fo_1', [], { uplink: 'eth0"; flush ruleset' })).toThrow(/not an interface name/);
    expect(renderNatDelete('lifeboat_fo_1')).toBe('table inet lifeboat_fo_1 {}\ndelete table inet lifeboat_fo_1\n');
  });
});

describe.skipIf(why !== undefined)('public addresses in network namespaces', () => {
  let ns: Namespaces;
  let nft: Nft;
  const table = natTableName('fo-nat-test');
  const rules = [
    { address: Public4, drAddress: Vm4, allow: ['tcp/80', 'udp/5353', 'icmp'] },
    { address: Public6, drAddress: Vm6, allow: ['tcp/80'] },
  ];

  beforeAll(async () => {
    ns = Namespaces.make();
    nft = new Nft({ netns: ns.router });
    // The VM answers on an allowed and on a forbidden port, so a refusal is the rules' doing.
    await ns.serve(ns.vm, 'vm', [80, 8080], 5353);
    await ns.serve(ns.client, 'client', [7000]);
  }, 60_000);

  afterAll(() => {
    ns?.remove();
  });

  it('without rules the public address reaches nothing, and the VM is reached only by its DR address', () => {
    expect(ns.connect(ns.client, 'tcp', Public4, 80)).toMatchObject({ ok: false });
    expect(ns.connect(ns.client, 'tcp', Vm4, 80, Answered)).toEqual({ ok: true, text: `vm ${Client4}` });
    expect(ns.connect(ns.vm, 'tcp', Client4, 7000, Answered)).toEqual({ ok: true, text: `client ${Vm4}` });
  });

  it('maps the public address 1:1 to the VM for the allowed ports, both families, and nothing else', async () => {
    const script = renderNatTable(table, rules, { uplink: 'up0' });
    await nft.apply(script);
    await nft.apply(script);
    expect(ns.tables(ns.router)).toEqual([table]);
    const listed = (await nft.listTable('inet', table))!;
    expect(listed.match(/dnat ip to 192\.0\.2\.10/g)).toHaveLength(3);

    // Allowed: lands on the VM, which sees the client's own address (DNAT keeps the source).
    expect(ns.connect(ns.client, 'tcp', Public4, 80, Answered)).toEqual({ ok: true, text: `vm ${Client4}` });
    expect(ns.connect(ns.client, 'udp', Public4, 5353, Answered)).toEqual({ ok: true, text: `vm ${Client4}` });
    expect(ns.connect(ns.client, 'tcp', Public6, 80, Answered)).toEqual({ ok: true, text: `vm ${Client6}` });
    expect(ns.exec(ns.client, ['ping', '-c', '1', '-W', '2', Public4])).toMatch(/1 received/);

    // Off the list: dropped (no answer at all), and counted by the guard.
    expect(ns.connect(ns.client, 'tcp', Public4, 8080)).toEqual({ ok: false, error: 'no answer' });
    expect(ns.connect(ns.client, 'tcp', Public6, 8080)).toEqual({ ok: false, error: 'no answer' });
    expect(ns.connect(ns.client, 'udp', Public4, 5354)).toEqual({ ok: false, error: 'no answer' });
    const guard = (await nft.listTable('inet', table))!;
    expect(guard).toMatch(new RegExp(`ip daddr ${Public4.replace(/\./g, '\\.')} counter packets [1-9]\\d* bytes \\d+ drop`));
    expect(guard).toMatch(new RegExp(`ip6 daddr ${Public6} counter packets [1-9]\\d* bytes \\d+ drop`));

    // Past the public address, straight to the DR address from the uplink: dropped by the forward filter.
    expect(ns.connect(ns.client, 'tcp', Vm4, 80)).toEqual({ ok: false, error: 'no answer' });
    expect(ns.connect(ns.client, 'tcp', Vm6, 80)).toEqual({ ok: false, error: 'no answer' });

    // The VM's own connections leave from the public address (SNAT), and their answers come back.
    expect(ns.connect(ns.vm, 'tcp', Client4, 7000, Answered)).toEqual({ ok: true, text: `client ${Public4}` });
    expect(ns.connect(ns.vm, 'tcp', Client6, 7000, Answered)).toEqual({ ok: true, text: `client ${Public6}` });
  });

  it('changes the allow-list in one transaction and removes the table without a trace', async () => {
    await nft.apply(renderNatTable(table, [{ ...rules[0]!, allow: ['tcp/8080'] }], { uplink: 'up0' }));
    expect(ns.tables(ns.router)).toEqual([table]);
    expect(ns.connect(ns.client, 'tcp', Public4, 8080, Answered)).toEqual({ ok: true, text: `vm ${Client4}` });
    expect(ns.connect(ns.client, 'tcp', Public4, 80)).toEqual({ ok: false, error: 'no answer' });
    expect(ns.connect(ns.client, 'tcp', Public6, 80)).toMatchObject({ ok: false });

    await nft.apply(renderNatDelete(table));
    await nft.apply(renderNatDelete(table));
    expect(ns.exec(ns.router, ['nft', 'list', 'tables']).trim()).toBe('');
    expect(ns.exec(ns.router, ['nft', 'list', 'ruleset']).trim()).toBe('');
    expect(ns.connect(ns.client, 'tcp', Public4, 8080)).toMatchObject({ ok: false });
    expect(ns.connect(ns.client, 'tcp', Vm4, 80, Answered)).toEqual({ ok: true, text: `vm ${Client4}` });
    expect(ns.connect(ns.vm, 'tcp', Client4, 7000, Answered)).toEqual({ ok: true, text: `client ${Vm4}` });
  });

  it('without an uplink SNATs whatever the VM sends through the host, and names nft\'s refusal in one line', async () => {
    await nft.apply(renderNatTable(table, [{ ...rules[0]!, allow: [] }]));
    expect(ns.connect(ns.vm, 'tcp', Client4, 7000, Answered)).toEqual({ ok: true, text: `client ${Public4}` });
    expect(ns.connect(ns.client, 'tcp', Public4, 80)).toEqual({ ok: false, error: 'no answer' });
    await nft.apply(renderNatDelete(table));
    expect(ns.tables(ns.router)).toEqual([]);
    await expect(nft.apply('table inet lifeboat_x { chain c { bogus } }\n')).rejects.toThrow(/^nft -f - \(in netns lbr[0-9a-f]+\): .*syntax error/);
    await expect(new Nft({ netns: ns.router, binary: 'nft-not-installed' }).tables()).rejects.toThrow(LifeboatError);
  });
});
