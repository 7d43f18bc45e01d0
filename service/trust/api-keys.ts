/**
 * API keys: opaque bearer credentials beside the JWTs (docs/api.md, API keys).
 *
 *   lbk_<id>_<secret>     id: 16 hex digits (public: lists and the audit log name it)
 *                         secret: 32 random bytes, base64url (43 characters)
 *
 * Only SHA-256(secret) is stored. A slow password hash (argon2, scrypt) defends low-entropy secrets
 * that people choose against guessing after a catalog leak; a 256-bit random secret cannot be
 * guessed, so one SHA-256 is as safe and costs microseconds on every request instead of tens of
 * milliseconds. The key is shown once, at creation. A use is recorded (last_used_at) at most once a
 * minute per key, and this process remembers when it last wrote, so most requests write nothing.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ApiKeyRow } from '../catalog/api-keys.js';
import { getApiKey, touchApiKey } from '../catalog/api-keys.js';
import type { Queryable } from '../catalog/db.js';
import { ErrUnauthenticated } from '../errors.js';
import type { Principal } from './roles.js';

export const ApiKeyPrefix = 'lbk_';
const ApiKeyPattern = /^lbk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
/** How often a key's last-used time is written, at most. */
export const LastUsedEverySeconds = 60;

export interface NewApiKey {
  id: string;
  /** The whole key, to show once. */
  text: string;
  secretSha256: Buffer;
}

export function newApiKey(): NewApiKey {
  const id = randomBytes(8).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  return { id, text: `${ApiKeyPrefix}${id}_${secret}`, secretSha256: sha256(secret) };
}

export function looksLikeApiKey(text: string): boolean {
  return text.startsWith(ApiKeyPrefix);
}

const sha256 = (secret: string) => createHash('sha256').update(secret, 'utf8').digest();

/** The principal of a key row, as the routes see it. */
export function keyPrincipal(row: Pick<ApiKeyRow, 'id' | 'role' | 'tenant'>): Principal {
  return { role: row.role, sub: `key:${row.id}`, keyId: row.id, ...(row.tenant ? { tenant: row.tenant } : {}) };
}

/**
 * The caller a key names, or 401: unknown, malformed, wrong secret (all `key_invalid`, alike),
 * revoked (`key_revoked`) or expired (`key_expired`). The message never echoes the secret.
 */
export async function authenticateApiKey(db: Queryable, text: string, touched: Map<string, number>, now = Date.now()): Promise<Principal> {
  const m = ApiKeyPattern.exec(text);
  const row = m ? await getApiKey(db, m[1]!) : undefined;
  if (!m || !row || !timingSafeEqual(row.secretSha256, sha256(m[2]!))) throw ErrUnauthenticated('key_invalid', 'API key is not valid');
  if (row.revokedAt) throw ErrUnauthenticated('key_revoked', `API key ${row.id} was revoked`);
  if (row.expiresAt && row.expiresAt.getTime() <= now) throw ErrUnauthenticated('key_expired', `API key ${row.id} has expired`);
  if ((touched.get(row.id) ?? 0) < now - LastUsedEverySeconds * 1000) {
    touched.set(row.id, now);
    await touchApiKey(db, row.id, LastUsedEverySeconds);
  }
  return keyPrincipal(row);
}
