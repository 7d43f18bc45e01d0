/**
 * Keys kept after a rotation (migration 021): the previous CA's and signing key's public material
 * until their overlap ends or they are retired, and tenants' previous replica keys (wrapped).
 */
import type { JWK } from 'jose';
import type { Queryable } from './db.js';

export type PreviousKind = 'ca' | 'signing';

export interface PreviousServiceKey {
  kind: PreviousKind;
  id: string;
  material: string;
  replacedAt: Date;
  retireAfter: Date;
  retiredAt: Date | null;
}

const cols = 'kind, id, material, replaced_at AS "replacedAt", retire_after AS "retireAfter", retired_at AS "retiredAt"';

export async function insertPreviousKey(db: Queryable, k: { kind: PreviousKind; id: string; material: string; retireAfter: Date }): Promise<void> {
  await db.query(`INSERT INTO previous_service_keys (kind, id, material, retire_after) VALUES ($1, $2, $3, $4)
    ON CONFLICT (kind, id) DO UPDATE SET material = EXCLUDED.material, retire_after = EXCLUDED.retire_after, retired_at = NULL`,
  [k.kind, k.id, k.material, k.retireAfter]);
}

/** Previous keys of a kind still accepted at `now` (not retired, overlap not over), newest first. */
export async function livePreviousKeys(db: Queryable, kind: PreviousKind, now = new Date()): Promise<PreviousServiceKey[]> {
  return db.query<PreviousServiceKey>(`SELECT ${cols} FROM previous_service_keys WHERE kind = $1 AND retired_at IS NULL AND retire_after > $2 ORDER BY replaced_at DESC`, [kind, now]);
}

export async function listPreviousKeys(db: Queryable): Promise<PreviousServiceKey[]> {
  return db.query<PreviousServiceKey>(`SELECT ${cols} FROM previous_service_keys ORDER BY kind, replaced_at DESC`);
}

/** Retires a previous key now; undefined when there is no such key. */
export async function retirePreviousKey(db: Queryable, kind: PreviousKind, id: string): Promise<PreviousServiceKey | undefined> {
  return (await db.query<PreviousServiceKey>(`UPDATE previous_service_keys SET retired_at = coalesce(retired_at, now()) WHERE kind = $1 AND id = $2 RETURNING ${cols}`, [kind, id]))[0];
}

export interface TenantPreviousKey {
  tenant: string;
  kid: string;
  publicJwk: JWK;
  privateWrapped: string;
  replacedAt: Date;
}

const tenantCols = 'tenant, kid, public_jwk AS "publicJwk", private_wrapped AS "privateWrapped", replaced_at AS "replacedAt"';

export async function insertTenantPreviousKey(db: Queryable, k: { tenant: string; kid: string; publicJwk: JWK; privateWrapped: string }): Promise<void> {
  await db.query('INSERT INTO tenant_previous_keys (tenant, kid, public_jwk, private_wrapped) VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, kid) DO NOTHING',
    [k.tenant, k.kid, JSON.stringify(k.publicJwk), k.privateWrapped]);
}

/** A tenant's previous replica keys (all tenants' when tenant is undefined), newest first. */
export async function tenantPreviousKeys(db: Queryable, tenant?: string): Promise<TenantPreviousKey[]> {
  return tenant === undefined
    ? db.query<TenantPreviousKey>(`SELECT ${tenantCols} FROM tenant_previous_keys ORDER BY tenant, replaced_at DESC`)
    : db.query<TenantPreviousKey>(`SELECT ${tenantCols} FROM tenant_previous_keys WHERE tenant = $1 ORDER BY replaced_at DESC`, [tenant]);
}

export async function deleteTenantPreviousKey(db: Queryable, tenant: string, kid: string): Promise<boolean> {
  return (await db.query('DELETE FROM tenant_previous_keys WHERE tenant = $1 AND kid = $2 RETURNING kid', [tenant, kid])).length > 0;
}

/** Sets a kept key's wrap where it still is `was`; the rows changed. */
export async function setTenantPreviousWrapped(db: Queryable, tenant: string, kid: string, wrapped: string, was: string): Promise<unknown[]> {
  return db.query('UPDATE tenant_previous_keys SET private_wrapped = $3 WHERE tenant = $1 AND kid = $2 AND private_wrapped = $4 RETURNING kid', [tenant, kid, wrapped, was]);
}
