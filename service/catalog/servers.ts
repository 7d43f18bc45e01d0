/** Agents' certificates (one row per issued certificate) and the enrollment tokens already used. */
import { ErrUnauthenticated } from '../errors.js';
import type { Queryable } from './db.js';

export interface ServerCertRow {
  serial: string;
  tenant: string;
  fqdn: string;
  notBefore: Date;
  notAfter: Date;
  revokedAt: Date | null;
}

const cols = 'serial, tenant, fqdn, not_before AS "notBefore", not_after AS "notAfter", revoked_at AS "revokedAt"';

/**
 * Records a token's jti as used; 'unauthenticated' (reason token_used) when it already was. Call it
 * in the transaction that records the certificate, so two concurrent uses cannot both succeed.
 */
export async function useEnrollmentToken(db: Queryable, jti: string, tenant: string, fqdn: string): Promise<void> {
  const rows = await db.query('INSERT INTO enrollment_tokens_used (jti, tenant, server_fqdn) VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING RETURNING jti', [jti, tenant, fqdn]);
  if (rows.length === 0) {
    throw ErrUnauthenticated('token_used', 'enrollment token was already used; create a new one with `lifeboat-service token create`');
  }
}

/** caId: the fingerprint of the CA that issued it (null: unknown, counted as not the current CA). */
export async function insertServerCert(db: Queryable, c: Omit<ServerCertRow, 'revokedAt'> & { caId?: string | null }): Promise<void> {
  await db.query('INSERT INTO servers (serial, tenant, fqdn, not_before, not_after, ca_id) VALUES ($1, $2, $3, $4, $5, $6)',
    [c.serial, c.tenant, c.fqdn, c.notBefore, c.notAfter, c.caId ?? null]);
}

export async function getServerCert(db: Queryable, serial: string): Promise<ServerCertRow | undefined> {
  return (await db.query<ServerCertRow>(`SELECT ${cols} FROM servers WHERE serial = $1`, [serial]))[0];
}

/** Revokes every certificate of the tenant's server; returns how many were live. */
export async function revokeServer(db: Queryable, tenant: string, fqdn: string): Promise<number> {
  const rows = await db.query('UPDATE servers SET revoked_at = now() WHERE tenant = $1 AND fqdn = $2 AND revoked_at IS NULL RETURNING serial', [tenant, fqdn]);
  return rows.length;
}

export async function listServers(db: Queryable, tenant: string): Promise<ServerCertRow[]> {
  return db.query<ServerCertRow>(`SELECT ${cols} FROM servers WHERE tenant = $1 ORDER BY fqdn, issued_at`, [tenant]);
}
