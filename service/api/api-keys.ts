/**
 * API keys (docs/api.md, API keys): opaque bearer credentials with a role, a tenant (tenant roles),
 * a name, an expiry; revocable; the key itself is in the answer to its creation only.
 *
 *   POST   /v1/api-keys {name, role, tenant?, expiresIn?}   201 {id, key, …}
 *   GET    /v1/api-keys (?tenant=)                          {keys: [...]}, never the secrets
 *   GET    /v1/api-keys/{id}
 *   DELETE /v1/api-keys/{id}                                revoke (200 with the key; again: the same)
 *
 * Access is manage-access (service/trust/roles.ts): hoster-admin every key; tenant-admin the keys of
 * its own tenant, and only of tenant roles. A key of another tenant, or a hoster key asked for by a
 * tenant role, is 404 as one that does not exist. Creation and revocation are audited.
 */
import { Hono } from 'hono';
import { z } from 'zod';
import { parseDuration } from '../../shared/units.js';
import { ErrInvalidArgument } from '../../shared/errors.js';
import type { ApiKeyRow } from '../catalog/api-keys.js';
import { getApiKey, insertApiKey, listApiKeys, revokeApiKey } from '../catalog/api-keys.js';
import { requireTenant } from '../catalog/tenants.js';
import type { ServiceContext } from '../context.js';
import { ErrForbidden, ErrNotFoundHere } from '../errors.js';
import { check, readJson } from '../http/json.js';
import { ifMatch, single, withEtag } from './etag.js';
import { listQuery, msOf, pageOf } from './lists.js';
import { newApiKey } from '../trust/api-keys.js';
import type { Principal } from '../trust/roles.js';
import { isHosterRole, mayManageAccess, Roles } from '../trust/roles.js';
import type { ApiClaims } from '../trust/tokens.js';
import { audited } from './audit.js';

type Env = { Variables: { operator: ApiClaims } };

export const DefaultKeyLifetime = '90d';
const MaxKeyLifetimeMs = 3650 * 86_400_000;

export const apiKeyCreateSchema = z.strictObject({
  name: z.string().min(1).max(100).regex(/^[\x20-\x7e]+$/, 'must be printable ASCII'),
  role: z.enum(Roles),
  tenant: z.string().max(64).optional(),
  expiresIn: z.string().max(16).default(DefaultKeyLifetime).describe('30m, 12h, 90d …, at most 3650d; "never" for no expiry'),
});
export const apiKeyListQuery = listQuery({ tenant: z.string().max(64).optional(), role: z.enum(Roles).optional() });

export function presentKey(k: ApiKeyRow) {
  const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);
  return {
    id: k.id, name: k.name, role: k.role, tenant: k.tenant, createdAt: iso(k.createdAt), createdBy: k.createdBy,
    expiresAt: iso(k.expiresAt), revokedAt: iso(k.revokedAt), revokedBy: k.revokedBy, lastUsedAt: iso(k.lastUsedAt),
  };
}

/** The key, when the caller may manage it; 404 otherwise as for a key that does not exist. */
async function keyFor(ctx: ServiceContext, claims: Principal, id: string): Promise<ApiKeyRow> {
  mayManageAccess(claims, claims.tenant); // a role that manages no keys is 403 before any lookup
  const row = /^[0-9a-f]{16}$/.test(id) ? await getApiKey(ctx.db, id) : undefined;
  if (!row || (!isHosterRole(claims.role) && row.tenant !== claims.tenant)) throw ErrNotFoundHere(`no API key ${id.slice(0, 40)}`);
  mayManageAccess(claims, row.tenant ?? undefined);
  return row;
}

function expiryOf(expiresIn: string, now: number): Date | null {
  if (expiresIn === 'never') return null;
  const ms = parseDuration(expiresIn, 'expiresIn');
  if (ms < 60_000 || ms > MaxKeyLifetimeMs) throw ErrInvalidArgument(`expiresIn ${expiresIn} must be between 1m and 3650d, or "never"`);
  return new Date(now + ms);
}

export function apiKeyRoutes(ctx: ServiceContext): Hono<Env> {
  const r = new Hono<Env>();
  r.post('/api-keys', async (c) => {
    const claims = c.get('operator');
    mayManageAccess(claims, claims.tenant);
    const body = await readJson(c, apiKeyCreateSchema);
    // The tenant the new key is for: a tenant role's own when it names none.
    const hosterKey = isHosterRole(body.role);
    const tenant = hosterKey ? undefined : (body.tenant ?? claims.tenant);
    mayManageAccess(claims, tenant);
    if (hosterKey && body.tenant !== undefined) throw ErrInvalidArgument(`tenant: a key of role ${body.role} has no tenant`);
    if (!hosterKey && tenant === undefined) throw ErrInvalidArgument(`tenant is missing: a key of role ${body.role} belongs to a tenant`);
    if (!isHosterRole(claims.role) && hosterKey) throw ErrForbidden('role', `role ${claims.role} may not create keys of role ${body.role}`);
    const expiresAt = expiryOf(body.expiresIn, Date.now());
    const key = newApiKey();
    const row = await audited(ctx, c, { action: 'api-key.create', target: `api-key ${key.id} (${body.role}${tenant ? ` of ${tenant}` : ''})`, tenant: tenant ?? null }, async (tx) => {
      if (tenant !== undefined) await requireTenant(tx, tenant);
      return insertApiKey(tx, { id: key.id, name: body.name, role: body.role, tenant: tenant ?? null, secretSha256: key.secretSha256, createdBy: claims.sub, expiresAt });
    });
    return single(c, presentKey(row), 201, { key: key.text });
  });
  r.get('/api-keys', async (c) => {
    const claims = c.get('operator');
    const q = check(apiKeyListQuery, c.req.query(), 'query');
    const tenant = q.tenant ?? (isHosterRole(claims.role) ? undefined : claims.tenant);
    mayManageAccess(claims, tenant);
    const page = pageOf(c, q, (await listApiKeys(ctx.db, tenant)).map(presentKey), { key: (k) => [msOf(k.createdAt!), k.id], match: { role: (k) => k.role } });
    return c.json({ keys: page.items.map(withEtag), nextCursor: page.nextCursor });
  });
  r.get('/api-keys/:id', async (c) => single(c, presentKey(await keyFor(ctx, c.get('operator'), c.req.param('id')))));
  r.delete('/api-keys/:id', async (c) => {
    const claims = c.get('operator');
    const row = await keyFor(ctx, claims, c.req.param('id'));
    await ifMatch(c, ctx.db, `api-key:${row.id}`, async () => {
      const now = await getApiKey(ctx.db, row.id);
      return now && presentKey(now);
    });
    const after = await audited(ctx, c, { action: 'api-key.revoke', target: `api-key ${row.id}`, tenant: row.tenant }, async (tx) => revokeApiKey(tx, row.id, claims.sub));
    return single(c, presentKey(after!));
  });
  return r;
}
