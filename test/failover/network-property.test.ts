/**
 * Properties of the network library over generated input: a mapping keeps the host part and lands
 * inside the DR subnet (checked against arithmetic on 32-bit and 128-bit integers, not against the code's
 * own byte masks); whatever a tenant sends, validation answers with a value or one LifeboatError line,
 * never a bug; whatever a guest prints, readback answers with a value or a LifeboatError.
 */
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { describe, expect, it } from 'vitest';
import { isLifeboatError } from '../../shared/errors.js';
import { mapAddress, parseMappings } from '../../service/failover/network/mappings.js';
import { parseConsoleReport, parseGuestNetwork } from '../../service/failover/network/readback.js';
import { validateVmNics } from '../../service/failover/network/settings.js';

const toBig = (ip: string) => ipaddr.parse(ip).toByteArray().reduce((n, b) => (n << 8n) | BigInt(b), 0n);

function fromBig(n: bigint, bytes: number): string {
  const out: number[] = [];
  for (let i = bytes - 1; i >= 0; i--) out.push(Number((n >> BigInt(i * 8)) & 0xffn));
  return ipaddr.fromByteArray(out).toString();
}

describe('network properties', () => {
  it('a mapped address keeps its host part and lies in the target subnet (IPv4 and IPv6)', () => {
    const family = fc.constantFrom(4, 6);
    fc.assert(fc.property(family, fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.integer({ min: 8, max: 30 }), (fam, a, b, h, p) => {
      const bits = fam === 4 ? 32n : 128n;
      const bytes = fam === 4 ? 4 : 16;
      const prefix = BigInt(fam === 4 ? p : p + 32);
      const all = (1n << bits) - 1n;
      const hostMask = (1n << (bits - prefix)) - 1n;
      const netMask = all ^ hostMask;
      const src = a & all & netMask;
      const dst = b & all & netMask;
      const host = h & hostMask;
      const mappings = parseMappings([{ kind: 'test', source: `${fromBig(src, bytes)}/${prefix}`, target: `${fromBig(dst, bytes)}/${prefix}` }]);
      const mapped = mapAddress(fromBig(src | host, bytes), mappings, 'test');
      expect(mapped?.address).toBe(`${fromBig(dst | host, bytes)}/${prefix}`);
      const got = toBig(mapped!.address.split('/')[0]!);
      expect(got & hostMask).toBe(host);
      expect(got & netMask).toBe(dst);
      expect(mapAddress(fromBig(src | host, bytes), mappings, 'production')).toBeUndefined();
    }), { numRuns: 300 });
  });

  it('any NIC list a tenant sends is either accepted or refused with one LifeboatError line', () => {
    const ipish = fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4Extended(), fc.string({ maxLength: 20 }));
    const cidrish = fc.tuple(ipish, fc.oneof(fc.integer({ min: -1, max: 140 }).map(String), fc.string({ maxLength: 4 }))).map(([ip, p]) => `${ip}/${p}`);
    const config = fc.oneof(
      fc.record({ mode: fc.constant('dhcp'), mtu: fc.option(fc.integer({ min: 0, max: 70000 }), { nil: undefined }) }, { requiredKeys: ['mode'] }),
      fc.record({
        mode: fc.constant('static'),
        addresses: fc.array(cidrish, { maxLength: 5 }),
        gateway4: fc.option(ipish, { nil: undefined }),
        gateway6: fc.option(ipish, { nil: undefined }),
        dns: fc.array(ipish, { maxLength: 3 }),
        search: fc.array(fc.oneof(fc.domain(), fc.string({ maxLength: 12 })), { maxLength: 3 }),
        network: fc.option(fc.oneof(fc.stringMatching(/^[a-z0-9-]{1,12}$/), fc.string({ maxLength: 12 })), { nil: undefined }),
      }, { requiredKeys: ['mode', 'addresses'] }),
      fc.anything(),
    );
    const nic = fc.record({ mac: fc.oneof(fc.constant('52:54:00:12:34:56'), fc.mixedCase(fc.stringMatching(/^[0-9a-f]{12}$/)), fc.string({ maxLength: 17 })), production: fc.option(config, { nil: undefined }), test: fc.option(config, { nil: undefined }) }, { requiredKeys: ['mac'] });
    let accepted = 0;
    fc.assert(fc.property(fc.oneof(fc.array(nic, { maxLength: 3 }), fc.anything()), (input) => {
      try {
        validateVmNics(input);
        accepted++;
      } catch (err) {
        expect(isLifeboatError(err), String((err as Error).stack)).toBe(true);
        expect((err as Error).message).not.toContain('\n');
        expect((err as Error).message).toMatch(/^nics/);
      }
    }), { numRuns: 2000 });
    expect(accepted).toBeGreaterThan(0);
  });

  it('whatever a guest prints, readback answers with a value or a LifeboatError', () => {
    const json = fc.oneof(fc.json(), fc.string({ maxLength: 40 }), fc.constant('[{"ifname":"x","address":"52:54:00:12:34:56","addr_info":[{"local":"10.0.0.1","prefixlen":99}]}]'), fc.constant('[{"dst":7}]'));
    fc.assert(fc.property(json, json, json, fc.string({ maxLength: 80 }), (addr, route4, route6, resolvConf) => {
      try {
        parseGuestNetwork({ addr, route4, route6, resolvConf });
      } catch (err) {
        expect(isLifeboatError(err), String((err as Error).stack)).toBe(true);
      }
      const log = `noise\n=====LIFEBOAT-NET-BEGIN=====\n--- ip -j addr\n${addr}\n--- ip -j route\n${route4}\n--- ip -6 -j route\n${route6}\n--- resolv.conf\n${resolvConf}\n=====LIFEBOAT-NET-END=====\n`;
      expect(() => parseConsoleReport(log)).not.toThrow();
    }), { numRuns: 1000 });
  });
});
