/**
 * The portal's local users and their one-time password reset links (migration 013). A tenant's users
 * carry its name; the hoster's carry none. Reset links are stored as the SHA-256 of their secret.
 */
import type { Role } from '../trust/roles.js';
import type { Queryable } from './db.js';

/** The API's roles (service/trust/roles.ts). */
export type UserRole = Role;

export interface UserRow {
  id: number;
  username: string;
  /** null for the hoster's users. */
  tenant: string | null;
  role: UserRole;
  passwordHash: string | null;
  createdAt: Date;
  updatedAt: Date;
}

const userCols = 'id, username, tenant, role, password_hash AS "passwordHash", created_at AS "createdAt", updated_at AS "updatedAt"';

/** The new user, or undefined when the username is taken. */
export async function insertUser(db: Queryable, u: { username: string; tenant: string | null; role: UserRole; passwordHash: string | null }): Promise<UserRow | undefined> {
  return (await db.query<UserRow>(
    `INSERT INTO portal_users (username, tenant, role, password_hash) VALUES ($1, $2, $3, $4) ON CONFLICT (username) DO NOTHING RETURNING ${userCols}`,
    [u.username, u.tenant, u.role, u.passwordHash]))[0];
}

export async function getUserByName(db: Queryable, username: string): Promise<UserRow | undefined> {
  return (await db.query<UserRow>(`SELECT ${userCols} FROM portal_users WHERE username = $1`, [username]))[0];
}

export async function getUserById(db: Queryable, id: number): Promise<UserRow | undefined> {
  return (await db.query<UserRow>(`SELECT ${userCols} FROM portal_users WHERE id = $1`, [id]))[0];
}

/** Every user, or a tenant's; by username. */
export async function listUsers(db: Queryable, tenant?: string): Promise<UserRow[]> {
  return tenant === undefined
    ? db.query<UserRow>(`SELECT ${userCols} FROM portal_users ORDER BY username`)
    : db.query<UserRow>(`SELECT ${userCols} FROM portal_users WHERE tenant = $1 ORDER BY username`, [tenant]);
}

export async function setUserRole(db: Queryable, id: number, role: UserRole): Promise<void> {
  await db.query('UPDATE portal_users SET role = $2, updated_at = now() WHERE id = $1', [id, role]);
}

export async function setUserPassword(db: Queryable, id: number, passwordHash: string): Promise<void> {
  await db.query('UPDATE portal_users SET password_hash = $2, updated_at = now() WHERE id = $1', [id, passwordHash]);
}

export async function deleteUser(db: Queryable, id: number): Promise<void> {
  await db.query('DELETE FROM portal_users WHERE id = $1', [id]);
}

export async function insertResetLink(db: Queryable, userId: number, secretSha256: string, expiresAt: Date): Promise<void> {
  await db.query('INSERT INTO portal_reset_links (secret_sha256, user_id, expires_at) VALUES ($1, $2, $3)', [secretSha256, userId, expiresAt]);
}

/** The user of an unused, unexpired link, marking it used (and voiding the user's other links). */
export async function useResetLink(db: Queryable, secretSha256: string, now = new Date()): Promise<number | undefined> {
  const rows = await db.query<{ userId: number }>(
    'UPDATE portal_reset_links SET used_at = $2 WHERE secret_sha256 = $1 AND used_at IS NULL AND expires_at > $2 RETURNING user_id AS "userId"', [secretSha256, now]);
  const userId = rows[0]?.userId;
  if (userId !== undefined) await db.query('UPDATE portal_reset_links SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL', [userId, now]);
  return userId === undefined ? undefined : Number(userId);
}

/** Whether a link is unused and unexpired, without using it (the form's GET). */
export async function resetLinkValid(db: Queryable, secretSha256: string, now = new Date()): Promise<boolean> {
  return (await db.query('SELECT 1 FROM portal_reset_links WHERE secret_sha256 = $1 AND used_at IS NULL AND expires_at > $2', [secretSha256, now])).length > 0;
}
