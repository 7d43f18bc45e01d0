import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { assertValidKey, chunkKey, diskPrefix, logKey, logsPrefix, manifestKey, parseKey, reverseLogKey, reversePrefix, tenantPrefix } from './keys.js';

const ref = { tenant: 'acme', vm: 'vm-01', disk: 'd0' };

describe('object keys', () => {
  it('builds the documented layout with fixed-width hex', () => {
    expect(logKey(ref, 1, 31)).toBe('tenants/acme/vms/vm-01/disks/d0/logs/0000000000000001/000000000000001f.hrl');
    expect(chunkKey(ref, 0, 2)).toBe('tenants/acme/vms/vm-01/disks/d0/initial/0000000000000000/0000000000000002.chunk');
    expect(manifestKey(ref, 0)).toBe('tenants/acme/vms/vm-01/disks/d0/initial/0000000000000000/manifest.json');
    expect(logsPrefix(ref)).toBe('tenants/acme/vms/vm-01/disks/d0/logs/');
    expect(reverseLogKey(ref, 1, 2)).toBe('tenants/acme/reverse/vms/vm-01/disks/d0/logs/0000000000000001/0000000000000002.hrl');
    expect(reversePrefix(ref)).toBe('tenants/acme/reverse/vms/vm-01/disks/d0/logs/');
  });

  it('parses what it builds', () => {
    expect(parseKey(logKey(ref, 7, 300))).toEqual({ kind: 'log', ...ref, generation: 7, sequence: 300 });
    expect(parseKey(chunkKey(ref, 2, 9))).toEqual({ kind: 'chunk', ...ref, generation: 2, index: 9 });
    expect(parseKey(manifestKey(ref, 3))).toEqual({ kind: 'manifest', ...ref, generation: 3 });
    expect(parseKey(reverseLogKey(ref, 4, 5))).toEqual({ kind: 'reverse-log', ...ref, generation: 4, sequence: 5 });
    expect(() => parseKey('tenants/acme/reverse/vms/vm-01/disks/d0/initial/0000000000000001/0000000000000002.hrl')).toThrow(/not a lifeboat object key/);
  });

  it('sorts log keys by sequence as strings', () => {
    fc.assert(fc.property(fc.nat(), fc.nat(), (a, b) => {
      const [ka, kb] = [logKey(ref, 0, a), logKey(ref, 0, b)];
      expect(Math.sign(ka < kb ? -1 : ka > kb ? 1 : 0)).toBe(Math.sign(a - b));
    }));
  });

  it('keeps every built key inside its tenant prefix', () => {
    const id = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/);
    fc.assert(fc.property(id, id, id, fc.maxSafeNat(), fc.maxSafeNat(), (tenant, vm, disk, g, s) => {
      const key = logKey({ tenant, vm, disk }, g, s);
      assertValidKey(key);
      expect(key.startsWith(tenantPrefix(tenant))).toBe(true);
      expect(parseKey(key)).toEqual({ kind: 'log', tenant, vm, disk, generation: g, sequence: s });
    }));
  });

  it('refuses unsafe ids, numbers and foreign keys', () => {
    for (const tenant of ['', '..', 'a/b', '-x', 'a b', 'a.b', 'x'.repeat(65), 'a\0']) {
      expect(() => diskPrefix({ ...ref, tenant })).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    }
    for (const n of [-1, 1.5, Number.MAX_SAFE_INTEGER + 1, Number.NaN]) {
      expect(() => logKey(ref, 0, n)).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    }
    for (const key of ['tenants/acme/vms/vm-01/disks/d0/logs/1/000000000000001f.hrl', 'tenants/acme/vms/vm-01/disks/d0/logs/0000000000000001/000000000000001F.hrl',
      'tenants/acme/vms/vm-01/disks/d0/other/0000000000000001/x', 'tenants/../vms/vm-01/disks/d0/logs/0000000000000001/000000000000001f.hrl', 'tenants/acme/vms/vm-01/disks/d0/logs/fffffffffffffff0/0000000000000001.hrl']) {
      expect(() => parseKey(key)).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    }
  });
});
