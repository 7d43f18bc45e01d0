/**
 * API keys in the catalog (migration 009): the SHA-256 of each key's secret, never the secret. The
 * key's text and its checks are service/trust/api-keys.ts.
 */
import type { Role } from '../trust/roles.js';
import type { Queryable } from './db.js';

export interface ApiKeyRow {
  id: string;
  name: string;
  role: Role;
  tenant: string | null;
  secretSha256: Buffer;
  createdAt: Date;
  createdBy: string;
  expiresAt: Date | null;
  revokedAt: Date | null;
  revokedBy: string | null;
  lastUsedAt: Date | null;
}

const cols = `id, name, role, tenant, secret_sha256 AS "secretSha256", created_at AS "createdAt", created_by AS "createdBy",
  expires_at AS "expiresAt", revoked_at AS "revokedAt", revoked_by AS "revokedBy", last_used_at AS "lastUsedAt"`;

export async function insertApiKey(db: Queryable, k: { id: string; name: string; role: Role; tenant: string | null; secretSha256: Buffer; createdBy: string; expiresAt: Date | null }): Promise<ApiKeyRow> {
  return (await db.query<ApiKeyRow>(
    `INSERT INTO api_keys (id, name, role, tenant, secret_sha256, created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ${cols}`,
    [k.id, k.name, k.role, k.tenant, k.secretSha256, k.createdBy, k.expiresAt]))[0]!;
}

export async function getApiKey(db: Queryable, id: string): Promise<ApiKeyRow | undefined> {
  return (await db.query<ApiKeyRow>(`SELECT ${cols} FROM api_keys WHERE id = $1`, [id]))[0];
}

/** Keys of one tenant (a string), of hoster roles (null), or all (undefined), oldest first. */
export async function listApiKeys(db: Queryable, tenant: string | null | undefined): Promise<ApiKeyRow[]> {
  if (tenant === undefined) return db.query<ApiKeyRow>(`SELECT ${cols} FROM api_keys ORDER BY created_at, id`);
  if (tenant === null) return db.query<ApiKeyRow>(`SELECT ${cols} FROM api_keys WHERE tenant IS NULL ORDER BY created_at, id`);
  return db.query<ApiKeyRow>(`SELECT ${cols} FROM api_keys WHERE tenant = $1 ORDER BY created_at, id`, [tenant]);
}

/** Revokes a live key; the row as it is after, or undefined when there is no such key. A revoked key stays revoked at its first time. */
export async function revokeApiKey(db: Queryable, id: string, by: string): Promise<ApiKeyRow | undefined> {
  await db.query('UPDATE api_keys SET revoked_at = now(), revoked_by = $2 WHERE id = $1 AND revoked_at IS NULL', [id, by]);
  return getApiKey(db, id);
}

/**
 * Records a use, at most once per `everySeconds` per key: the UPDATE's condition makes the other
 * uses of that minute a read of one indexed row and no write.
 */
export async function touchApiKey(db: Queryable, id: string, everySeconds: number): Promise<void> {
  await db.query(`UPDATE api_keys SET last_used_at = now() WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2))`, [id, everySeconds]);
}
