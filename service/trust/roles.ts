/**
 * Roles and access, in one place: every /v1 route asks one of the checks below before it reads or
 * changes anything (docs/api.md has the table of routes and roles, and a test walks it).
 *
 *   role              scope          read  operate  administer  manage access
 *   hoster-admin      every tenant    ✓      ✓         ✓            ✓
 *   hoster-operator   every tenant    ✓      ✓         ✓
 *   tenant-admin      its tenant      ✓      ✓         ✓            ✓
 *   tenant-operator   its tenant      ✓      ✓
 *   tenant-viewer     its tenant      ✓
 *
 * read: GET anything in scope. operate: failovers (and recovery plans): request, stop, commit,
 * revert. administer: configuration (NICs, hardware, mappings, public addresses; for hoster roles
 * tenants, networks, pools, enrollment). manage access: API keys (a tenant-admin only its own
 * tenant's tenant-role keys) and, when there is such a route, deleting a tenant.
 *
 * Answers: a tenant role asking about another tenant gets 404 (exactly as for a tenant that does not
 * exist, so existence never leaks), whatever it asked; a role lacking the access in its own scope gets
 * 403 (reason `role`); a tenant role on a hoster-wide route (no tenant in the path) gets 403.
 */
import { ErrForbidden, ErrNotFoundHere } from '../errors.js';

export const Roles = ['hoster-admin', 'hoster-operator', 'tenant-admin', 'tenant-operator', 'tenant-viewer'] as const;
export type Role = (typeof Roles)[number];
export const HosterRoles: readonly Role[] = ['hoster-admin', 'hoster-operator'];
export const TenantRoles: readonly Role[] = ['tenant-admin', 'tenant-operator', 'tenant-viewer'];

export type Access = 'read' | 'operate' | 'administer' | 'manage-access';

const accessOf: Record<Role, readonly Access[]> = {
  'hoster-admin': ['read', 'operate', 'administer', 'manage-access'],
  'hoster-operator': ['read', 'operate', 'administer'],
  'tenant-admin': ['read', 'operate', 'administer', 'manage-access'],
  'tenant-operator': ['read', 'operate'],
  'tenant-viewer': ['read'],
};

/** Who is calling: a JWT's claims or an API key's record. */
export interface Principal {
  role: Role;
  /** The tenant of a tenant role; absent for hoster roles. */
  tenant?: string;
  /** The token's subject, or `key:<id>` for an API key. */
  sub: string;
  /** The API key's id, when the caller used one. */
  keyId?: string;
}

export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (Roles as readonly string[]).includes(value);
}

export function isHosterRole(role: Role): boolean {
  return HosterRoles.includes(role);
}

/** Whether a role has a kind of access in its own scope (no tenant check). */
export function roleHas(role: Role, access: Access): boolean {
  return accessOf[role].includes(access);
}

/**
 * The check behind the four below. `tenant` is the tenant the route is about, or undefined for a
 * hoster-wide route. Returns the tenant (or undefined) so a route can write
 * `const tenant = mayRead(claims, pathId(c, 'tenant'))`.
 */
function need<T extends string | undefined>(claims: Principal, tenant: T, access: Access): T {
  const hoster = isHosterRole(claims.role);
  if (!hoster) {
    if (tenant === undefined) throw ErrForbidden('role', `role ${claims.role} may use only the routes under /v1/tenants/{tenant}`);
    if (claims.tenant !== tenant) throw ErrNotFoundHere(`no tenant ${tenant}`);
  }
  if (!roleHas(claims.role, access)) throw ErrForbidden('role', `role ${claims.role} may not ${access === 'manage-access' ? 'manage access' : access} ${tenant === undefined ? 'here' : `in tenant ${tenant}`}`);
  return tenant;
}

/** Read a tenant's objects (tenant given) or hoster-wide ones (undefined). */
export const mayRead = <T extends string | undefined>(claims: Principal, tenant: T): T => need(claims, tenant, 'read');
/** Request and change failovers and plan runs. */
export const mayOperate = <T extends string | undefined>(claims: Principal, tenant: T): T => need(claims, tenant, 'operate');
/** Change configuration. */
export const mayAdminister = <T extends string | undefined>(claims: Principal, tenant: T): T => need(claims, tenant, 'administer');
/** Create, list and revoke API keys; delete tenants. */
export const mayManageAccess = <T extends string | undefined>(claims: Principal, tenant: T): T => need(claims, tenant, 'manage-access');


/**
 * A route that names a tenant's object by its id alone (POST /v1/failovers/{id}/failback): the role
 * must have the access; the answer is the scope to look the object up in, the caller's tenant for a
 * tenant role (an object of another tenant is then answered 404, as one that does not exist) or
 * undefined for a hoster role.
 */
export function objectScope(claims: Principal, access: Access): string | undefined {
  if (!roleHas(claims.role, access)) throw ErrForbidden('role', `role ${claims.role} may not ${access === 'manage-access' ? 'manage access' : access} here`);
  if (isHosterRole(claims.role)) return undefined;
  if (claims.tenant === undefined) throw ErrForbidden('role', `role ${claims.role} names no tenant`);
  return claims.tenant;
}
