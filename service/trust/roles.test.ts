/** Roles and access: every role against every kind of access, in its tenant, another, and hoster-wide. */
import { describe, expect, it } from 'vitest';
import { isLifeboatError } from '../../shared/errors.js';
import type { Access, Principal, Role } from './roles.js';
import { mayAdminister, mayManageAccess, mayOperate, mayRead, Roles } from './roles.js';

const checks: Record<Access, typeof mayRead> = { read: mayRead, operate: mayOperate, administer: mayAdminister, 'manage-access': mayManageAccess };
const principal = (role: Role): Principal => (role.startsWith('tenant-') ? { role, tenant: 'acme', sub: role } : { role, sub: role });

/** The status a check answers: 0 when allowed. */
function status(fn: () => unknown): number {
  try {
    fn();
    return 0;
  } catch (err) {
    if (!isLifeboatError(err)) throw err;
    return err.status;
  }
}

// Allowed accesses, by role, written out rather than derived from the module's own table.
const allowed: Record<Role, Access[]> = {
  'hoster-admin': ['read', 'operate', 'administer', 'manage-access'],
  'hoster-operator': ['read', 'operate', 'administer'],
  'tenant-admin': ['read', 'operate', 'administer', 'manage-access'],
  'tenant-operator': ['read', 'operate'],
  'tenant-viewer': ['read'],
};

describe('access checks', () => {
  for (const role of Roles) {
    it(`${role}: allowed, 403 or 404 as the table says`, () => {
      const p = principal(role);
      for (const [access, check] of Object.entries(checks) as [Access, typeof mayRead][]) {
        const ok = allowed[role].includes(access);
        expect(status(() => check(p, 'acme')), `${access} in its tenant`).toBe(ok ? 0 : 403);
        // Another tenant: hoster roles as in their own; tenant roles 404 whatever the access.
        expect(status(() => check(p, 'globex')), `${access} in another tenant`).toBe(role.startsWith('tenant-') ? 404 : ok ? 0 : 403);
        expect(status(() => check(p, undefined)), `${access} hoster-wide`).toBe(role.startsWith('tenant-') ? 403 : ok ? 0 : 403);
      }
    });
  }

  it('returns the tenant it checked, and names no other tenant in its 404', () => {
    expect(mayRead(principal('tenant-viewer'), 'acme')).toBe('acme');
    expect(() => mayRead(principal('tenant-viewer'), 'globex')).toThrow('no tenant globex');
  });
});
