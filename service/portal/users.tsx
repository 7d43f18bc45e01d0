/**
 * A tenant's portal users, for the roles that manage access (tenant-admin; hoster-admin for any
 * tenant): the list, a new user (a tenant role; no password: a one-time reset link is issued and
 * shown once), a role change, removal, and a new reset link. The operations are the API's
 * (api/users.ts): a role change or removal ends the user's sessions. A user of another tenant, or the
 * hoster's, is not found here.
 */
import type { Context } from 'hono';
import { Hono } from 'hono';
import { isLifeboatError, LifeboatError } from '../../shared/errors.js';
import { changeRole, checkUsername, createUser, issueResetLink, removeUser, userList } from '../api/users.js';
import type { UserRole } from '../catalog/users.js';
import { getUserByName } from '../catalog/users.js';
import type { ServiceContext } from '../context.js';
import { TenantRoles } from '../trust/roles.js';
import type { Session, SessionStore } from '../users/sessions.js';
import { tenantPath } from './dashboard.js';
import { when } from './format.js';
import { Page } from './layout.js';
import type { PortalEnv } from './security.js';
import { sessionMay, tenantOf } from './security.js';

const isTenantRole = (r: unknown): r is UserRole => typeof r === 'string' && (TenantRoles as readonly string[]).includes(r);

function RoleSelect(p: { id: string; value?: string | undefined }) {
  return <select id={p.id} name="role">{TenantRoles.map((r) => <option value={r} selected={r === p.value}>{r}</option>)}</select>;
}

async function usersPage(ctx: ServiceContext, tenant: string, session: Session, note?: { error?: string | undefined; link?: { username: string; url: string; expiresAt: string } | undefined; typed?: string | undefined }) {
  const users = await userList(ctx, tenant);
  const manage = sessionMay(session, 'manage-access');
  const usersPath = tenantPath(tenant, '/users');
  return (
    <Page title={`Users · ${tenant}`} session={session} tenant={tenant}>
      <h1>Users of {tenant}</h1>
      {note?.error ? <p class="error" role="alert" id="users-error">{note.error}</p> : null}
      {note?.link ? (
        <div role="status" id="reset-link">
          <p>A one-time link for {note.link.username} to set a password, valid until {when(note.link.expiresAt)}. It is shown only now: give it to them.</p>
          <p><code class="wrap">{note.link.url}</code></p>
        </div>
      ) : null}
      <div class="table-wrap" tabindex={0}><table>
        <thead><tr><th scope="col">User</th><th scope="col">Role</th><th scope="col">Password set</th><th scope="col">Since</th>{manage ? <th scope="col">Change</th> : null}</tr></thead>
        <tbody>{users.map((u, i) => (
          <tr data-user={u.username}>
            <th scope="row">{u.username}</th><td>{u.role}</td><td>{u.hasPassword ? 'yes' : 'no'}</td><td>{when(u.createdAt)}</td>
            {manage ? (
              <td class="actions">
                <form method="post" action={`${usersPath}/role`}>
                  <input type="hidden" name="_csrf" value={session.csrf} /><input type="hidden" name="username" value={u.username} />
                  <label for={`role-${i}`} class="visually-hidden">Role of {u.username}</label>
                  <RoleSelect id={`role-${i}`} value={u.role} />
                  <button type="submit">Set role</button>
                </form>
                <form method="post" action={`${usersPath}/reset-link`}>
                  <input type="hidden" name="_csrf" value={session.csrf} /><input type="hidden" name="username" value={u.username} />
                  <button type="submit" aria-label={`Reset link for ${u.username}`}>Reset link</button>
                </form>
                {u.username !== session.username ? (
                  <form method="post" action={`${usersPath}/remove`}>
                    <input type="hidden" name="_csrf" value={session.csrf} /><input type="hidden" name="username" value={u.username} />
                    <button type="submit" aria-label={`Remove ${u.username}`}>Remove</button>
                  </form>
                ) : null}
              </td>
            ) : null}
          </tr>
        ))}</tbody>
      </table></div>
      {manage ? (
        <>
          <h2>Add a user</h2>
          <form method="post" action={usersPath} class="stack">
            <input type="hidden" name="_csrf" value={session.csrf} />
            <label for="new-username">Username (an e-mail address works)</label>
            <input id="new-username" name="username" required value={note?.typed ?? ''} aria-describedby={note?.error ? 'users-error' : undefined} />
            <label for="new-role">Role</label>
            <RoleSelect id="new-role" value="tenant-viewer" />
            <button type="submit" class="primary">Add user</button>
          </form>
        </>
      ) : <p>Your role ({session.role}) may see the users but not change them.</p>}
    </Page>
  );
}

export function userRoutes(ctx: ServiceContext, sessions: SessionStore): Hono<PortalEnv> {
  const app = new Hono<PortalEnv>();
  const baseUrl = (c: Context) => new URL(c.req.url).origin;
  /** The form's user when it is this tenant's; the hoster's users and another tenant's are not found. */
  const userIn = async (tenant: string, name: unknown) => {
    const u = typeof name === 'string' && name.length <= 200 ? await getUserByName(ctx.db, name.trim().toLowerCase()) : undefined;
    if (!u || u.tenant !== tenant) throw new LifeboatError('not_found', 'no such user');
    return u;
  };
  const mustManage = (s: Session) => {
    if (!sessionMay(s, 'manage-access')) throw new LifeboatError('forbidden', `role ${s.role} may not manage users`);
  };

  app.get('/t/:tenant/users', async (c) => c.html(await usersPage(ctx, tenantOf(c), c.get('session'))));

  app.post('/t/:tenant/users', async (c) => {
    const tenant = tenantOf(c);
    const session = c.get('session');
    mustManage(session);
    const form = await c.req.parseBody();
    const typed = typeof form.username === 'string' ? form.username.slice(0, 200) : '';
    try {
      if (!isTenantRole(form.role)) throw new LifeboatError('invalid_argument', `role must be one of ${TenantRoles.join(', ')}`);
      const u = await createUser(ctx, { username: checkUsername(typed), role: form.role, tenant });
      const link = await issueResetLink(ctx, u.username);
      return c.html(await usersPage(ctx, tenant, session, { link: { username: u.username, url: `${baseUrl(c)}${link.path}`, expiresAt: link.expiresAt } }), 201);
    } catch (err) {
      if (!isLifeboatError(err) || (err.code !== 'invalid_argument' && err.code !== 'already_exists')) throw err;
      return c.html(await usersPage(ctx, tenant, session, { error: err.message, typed }), err.code === 'already_exists' ? 409 : 400);
    }
  });

  app.post('/t/:tenant/users/:action{role|reset-link|remove}', async (c) => {
    const tenant = tenantOf(c);
    const session = c.get('session');
    const form = await c.req.parseBody();
    const u = await userIn(tenant, form.username);
    mustManage(session);
    const action = c.req.param('action');
    if (action === 'role') {
      if (!isTenantRole(form.role)) return c.html(await usersPage(ctx, tenant, session, { error: `role must be one of ${TenantRoles.join(', ')}` }), 400);
      await changeRole(ctx, sessions, u.username, form.role);
    } else if (action === 'remove') {
      if (u.id === session.userId) return c.html(await usersPage(ctx, tenant, session, { error: 'You cannot remove yourself.' }), 409);
      await removeUser(ctx, sessions, u.username);
    } else {
      const link = await issueResetLink(ctx, u.username);
      return c.html(await usersPage(ctx, tenant, session, { link: { username: u.username, url: `${baseUrl(c)}${link.path}`, expiresAt: link.expiresAt } }));
    }
    return c.redirect(tenantPath(tenant, '/users'), 303);
  });
  return app;
}
