/**
 * The portal's local users, for the hoster's access managers (role hoster-admin: the CLI's `user` commands call these routes)
 * and the portal's own pages: create, list, change role, remove, issue a one-time password reset
 * link, sign in with a password, set a password from a link. Changing a role, removing a user or
 * resetting a password ends the user's sessions.
 *
 *   GET    /v1/users?tenant=T                      {users: [{username, tenant, role, hasPassword, createdAt}]}
 *   POST   /v1/users                               {username, role, tenant?, password?}
 *   PATCH  /v1/users/{username}                    {role}
 *   DELETE /v1/users/{username}
 *   POST   /v1/users/{username}/reset-links        {ttl?} → {path, url, expiresAt}
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Context } from 'hono';
import { Hono } from 'hono';
import { z } from 'zod';
import { LifeboatError } from '../../shared/errors.js';
import { parseDuration } from '../../shared/units.js';
import { requireTenant } from '../catalog/tenants.js';
import type { UserRole, UserRow } from '../catalog/users.js';
import { deleteUser, getUserById, getUserByName, insertResetLink, insertUser, listUsers, resetLinkValid, setUserPassword, setUserRole, useResetLink } from '../catalog/users.js';
import { HosterRoles, isHosterRole, Roles, TenantRoles } from '../trust/roles.js';
import type { ServiceContext } from '../context.js';
import { ErrConflict } from '../errors.js';
import { check, readJson } from '../http/json.js';
import { ifMatch, lockObject, single, withEtag } from './etag.js';
import { listQuery, pageOf } from './lists.js';
import { hashPassword, verifyPassword } from '../users/passwords.js';
import type { SessionStore } from '../users/sessions.js';
import { checkTenantName } from './operations.js';

export const DefaultResetLinkTtl = '24h';
export const MaxResetLinkTtlMs = 7 * 86_400_000;
export const ResetPathPrefix = '/portal/reset/';
const UsernamePattern = /^[a-z0-9][a-z0-9._@+-]{0,127}$/;

export const userCreateSchema = z.strictObject({
  username: z.string().max(200), role: z.enum(Roles), tenant: z.string().max(200).optional(), password: z.string().max(2048).optional(),
});
export const userPatchSchema = z.strictObject({ role: z.enum(Roles) });
export const resetSchema = z.strictObject({ ttl: z.string().max(20).optional() });
export const userListQuery = listQuery({ tenant: z.string().max(200).optional(), role: z.enum(Roles).optional() });

export function checkUsername(name: string): string {
  const n = name.trim().toLowerCase();
  if (!UsernamePattern.test(n)) throw new LifeboatError('invalid_argument', `username ${JSON.stringify(name.slice(0, 80))} must be 1 to 128 of [a-z0-9._@+-], starting with a letter or digit (an e-mail address works)`);
  return n;
}

export function presentUser(u: UserRow) {
  return { username: u.username, tenant: u.tenant, role: u.role, hasPassword: u.passwordHash !== null, createdAt: u.createdAt.toISOString() };
}

async function requireUser(ctx: ServiceContext, username: string): Promise<UserRow> {
  const u = await getUserByName(ctx.db, checkUsername(username));
  if (!u) throw new LifeboatError('not_found', `no user ${username.slice(0, 128)}`);
  return u;
}

export async function createUser(ctx: ServiceContext, u: { username: string; role: UserRole; tenant?: string | undefined; password?: string | undefined }) {
  const username = checkUsername(u.username);
  const hoster = isHosterRole(u.role);
  if (hoster && u.tenant !== undefined) throw new LifeboatError('invalid_argument', `role ${u.role} is the hoster's: give no tenant`);
  if (!hoster && u.tenant === undefined) throw new LifeboatError('invalid_argument', `role ${u.role} needs a tenant`);
  if (u.tenant !== undefined) await requireTenant(ctx.db, checkTenantName(u.tenant));
  const passwordHash = u.password === undefined ? null : await hashPassword(u.password);
  const row = await insertUser(ctx.db, { username, tenant: u.tenant ?? null, role: u.role, passwordHash });
  if (!row) throw new LifeboatError('already_exists', `user ${username} already exists`);
  return presentUser(row);
}

export async function userList(ctx: ServiceContext, tenant?: string) {
  if (tenant !== undefined) await requireTenant(ctx.db, checkTenantName(tenant));
  return (await listUsers(ctx.db, tenant)).map(presentUser);
}

/** A tenant's user keeps a tenant role and a hoster's user a hoster role. */
export async function changeRole(ctx: ServiceContext, sessions: SessionStore | undefined, username: string, role: UserRole) {
  await lockObject(ctx.db, `user:${checkUsername(username)}`);
  const u = await requireUser(ctx, username);
  if (isHosterRole(role) !== isHosterRole(u.role)) {
    throw ErrConflict('role_scope', `user ${u.username} is ${u.tenant ? `a user of tenant ${u.tenant}` : 'the hoster\'s'}: role ${role} is not one of ${(u.tenant ? TenantRoles : HosterRoles).join(', ')}`);
  }
  await setUserRole(ctx.db, u.id, role);
  await sessions?.endAllOf(u.id);
  return presentUser({ ...u, role });
}

export async function removeUser(ctx: ServiceContext, sessions: SessionStore | undefined, username: string) {
  await lockObject(ctx.db, `user:${checkUsername(username)}`);
  const u = await requireUser(ctx, username);
  await deleteUser(ctx.db, u.id);
  await sessions?.endAllOf(u.id);
  return { username: u.username, removed: true };
}

const secretHash = (secret: string) => createHash('sha256').update(secret).digest('hex');

/** A one-time link that sets the user's password; the secret is shown once and only its hash kept. */
export async function issueResetLink(ctx: ServiceContext, username: string, ttl = DefaultResetLinkTtl) {
  const u = await requireUser(ctx, username);
  const ms = parseDuration(ttl, 'ttl');
  if (ms < 60_000 || ms > MaxResetLinkTtlMs) throw new LifeboatError('invalid_argument', `ttl ${ttl} must be between 1m and 7d`);
  const secret = randomBytes(32).toString('base64url');
  const expiresAt = new Date(Date.now() + ms);
  await insertResetLink(ctx.db, u.id, secretHash(secret), expiresAt);
  return { username: u.username, path: `${ResetPathPrefix}${secret}`, expiresAt: expiresAt.toISOString() };
}

export async function resetLinkUsable(ctx: ServiceContext, secret: string): Promise<boolean> {
  return /^[A-Za-z0-9_-]{43}$/.test(secret) && resetLinkValid(ctx.db, secretHash(secret));
}

/** Sets the password of the link's user and uses the link up; not_found for a used, expired or unknown link. */
export async function resetPassword(ctx: ServiceContext, sessions: SessionStore | undefined, secret: string, password: string) {
  const hash = await hashPassword(password);
  const userId = /^[A-Za-z0-9_-]{43}$/.test(secret) ? await ctx.db.transaction(async (tx) => {
    const id = await useResetLink(tx, secretHash(secret));
    if (id !== undefined) await setUserPassword(tx, id, hash);
    return id;
  }) : undefined;
  if (userId === undefined) throw new LifeboatError('not_found', 'this reset link is used, expired or unknown; ask your administrator for a new one');
  await sessions?.endAllOf(userId);
  const u = await getUserById(ctx.db, userId);
  return { username: u?.username ?? '' };
}

/** The user whose password this is, or undefined (unknown name, no password set, wrong password) at the same cost. */
export async function checkCredentials(ctx: ServiceContext, username: string, password: string): Promise<UserRow | undefined> {
  const u = UsernamePattern.test(username.trim().toLowerCase()) ? await getUserByName(ctx.db, username.trim().toLowerCase()) : undefined;
  const ok = await verifyPassword(u?.passwordHash ?? null, password);
  return ok ? u : undefined;
}

/** The routes; the caller mounts them behind the manage-access check (trust/roles.ts). */
export function userRoutes(ctx: ServiceContext, sessions: () => SessionStore | undefined): Hono {
  const app = new Hono();
  /** A change of one user waits for its lock and checks If-Match against what it is now. */
  const unchanged = async (c: Context) => {
    const username = checkUsername(c.req.param('username') ?? '');
    await ifMatch(c, ctx.db, `user:${username}`, async () => {
      const now = await getUserByName(ctx.db, username);
      return now && presentUser(now);
    });
  };
  app.get('/users', async (c) => {
    const q = check(userListQuery, c.req.query(), 'query');
    const page = pageOf(c, q, await userList(ctx, q.tenant), { key: (u) => [u.username], match: { role: (u) => u.role } });
    return c.json({ users: page.items.map(withEtag), nextCursor: page.nextCursor });
  });
  app.post('/users', async (c) => single(c, await createUser(ctx, await readJson(c, userCreateSchema)), 201));
  app.patch('/users/:username', async (c) => {
    const { role } = await readJson(c, userPatchSchema);
    await unchanged(c);
    return single(c, await changeRole(ctx, sessions(), c.req.param('username'), role));
  });
  app.delete('/users/:username', async (c) => {
    await unchanged(c);
    return c.json(await removeUser(ctx, sessions(), c.req.param('username')));
  });
  app.post('/users/:username/reset-links', async (c) => {
    const link = await issueResetLink(ctx, c.req.param('username'), (await readJson(c, resetSchema)).ttl);
    return c.json({ ...link, url: new URL(link.path, c.req.url).toString() }, 201);
  });
  return app;
}
