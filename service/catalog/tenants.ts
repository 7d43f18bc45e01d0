/** Tenants and their authorization entries (server-name pattern, replica storage, trust group). */
import type { JWK } from 'jose';
import { LifeboatError } from '../../shared/errors.js';
import type { Queryable } from './db.js';

export interface TenantRow {
  name: string;
  createdAt: Date;
  replicaPublicJwk: JWK;
  replicaPrivateWrapped: string;
  /** Hours a test failover may run; null: the service's default (config failover.testMaxHours). */
  testFailoverMaxHours: number | null;
}

export interface AuthorizationRow {
  id: number;
  tenant: string;
  pattern: string;
  storage: string;
  trustGroup: string;
  createdAt: Date;
}

const tenantCols = 'name, created_at AS "createdAt", replica_public_jwk AS "replicaPublicJwk", replica_private_wrapped AS "replicaPrivateWrapped", test_failover_max_hours AS "testFailoverMaxHours"';
const authCols = 'id, tenant, pattern, storage, trust_group AS "trustGroup", created_at AS "createdAt"';

export async function insertTenant(db: Queryable, t: { name: string; replicaPublicJwk: JWK; replicaPrivateWrapped: string }): Promise<TenantRow> {
  const rows = await db.query<TenantRow>(
    `INSERT INTO tenants (name, replica_public_jwk, replica_private_wrapped) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING RETURNING ${tenantCols}`,
    [t.name, JSON.stringify(t.replicaPublicJwk), t.replicaPrivateWrapped]);
  if (rows.length === 0) throw new LifeboatError('already_exists', `tenant ${t.name} already exists`);
  return rows[0]!;
}

export async function getTenant(db: Queryable, name: string): Promise<TenantRow | undefined> {
  return (await db.query<TenantRow>(`SELECT ${tenantCols} FROM tenants WHERE name = $1`, [name]))[0];
}

export async function requireTenant(db: Queryable, name: string): Promise<TenantRow> {
  const t = await getTenant(db, name);
  if (!t) throw new LifeboatError('not_found', `no tenant ${name}`);
  return t;
}

export async function listTenants(db: Queryable): Promise<TenantRow[]> {
  return db.query<TenantRow>(`SELECT ${tenantCols} FROM tenants ORDER BY name`);
}

/** Sets the tenant's settings given (null: back to the service's default); false when there is no such tenant. */
export async function setTenantSettings(db: Queryable, name: string, s: { testFailoverMaxHours?: number | null }): Promise<boolean> {
  if (s.testFailoverMaxHours === undefined) return (await getTenant(db, name)) !== undefined;
  const rows = await db.query('UPDATE tenants SET test_failover_max_hours = $2 WHERE name = $1 RETURNING name', [name, s.testFailoverMaxHours]);
  return rows.length > 0;
}

/** Adds an entry, or updates storage and trust group of the tenant's entry with the same pattern. */
export async function upsertAuthorization(db: Queryable, a: { tenant: string; pattern: string; storage: string; trustGroup: string }): Promise<AuthorizationRow> {
  const rows = await db.query<AuthorizationRow>(
    `INSERT INTO authorizations (tenant, pattern, storage, trust_group) VALUES ($1, $2, $3, $4)
     ON CONFLICT (tenant, pattern) DO UPDATE SET storage = EXCLUDED.storage, trust_group = EXCLUDED.trust_group RETURNING ${authCols}`,
    [a.tenant, a.pattern, a.storage, a.trustGroup]);
  return rows[0]!;
}

/** The tenant's entries, oldest first (the order bestMatch breaks ties by). */
export async function listAuthorizations(db: Queryable, tenant: string): Promise<AuthorizationRow[]> {
  return db.query<AuthorizationRow>(`SELECT ${authCols} FROM authorizations WHERE tenant = $1 ORDER BY created_at, id`, [tenant]);
}
