/**
 * Sign in and sign out. The sign-in form is protected from cross-site posts by a double-submit token
 * (a random cookie of its own, echoed in the form) since there is no session yet; failed sign-ins
 * are limited per username and per address (users/sign-in-limit.ts) before the password is checked.
 */
import { getConnInfo } from '@hono/node-server/conninfo';
import { randomBytes } from 'node:crypto';
import type { Context } from 'hono';
import { Hono } from 'hono';
import { getCookie, setCookie } from 'hono/cookie';
import { checkCredentials } from '../api/users.js';
import type { ServiceContext } from '../context.js';
import { sameToken, type SessionStore } from '../users/sessions.js';
import type { SignInLimit } from '../users/sign-in-limit.js';
import { Page } from './layout.js';
import { clearSessionCookie, overTls, SessionCookie, setSessionCookie } from './security.js';

const PreSessionCookie = 'lifeboat_signin';

/** A fresh double-submit token for a form shown before sign-in (sign-in, password reset). */
export function preSessionToken(c: Context): string {
  const token = randomBytes(24).toString('base64url');
  setCookie(c, PreSessionCookie, token, { path: '/portal', httpOnly: true, secure: overTls(c), sameSite: 'Strict', maxAge: 3600 });
  return token;
}

export function preSessionTokenValid(c: Context, sent: unknown): boolean {
  return sameToken(typeof sent === 'string' ? sent : undefined, getCookie(c, PreSessionCookie));
}

function SignInPage(p: { csrf: string; username?: string; error?: string | undefined; note?: string | undefined; next?: string | undefined }) {
  return (
    <Page title="Sign in">
      <h1>Sign in</h1>
      {p.note ? <p class="note" role="status">{p.note}</p> : null}
      {p.error ? <p class="error" role="alert" id="sign-in-error">{p.error}</p> : null}
      <form method="post" action="/portal/sign-in" class="stack">
        <input type="hidden" name="_csrf" value={p.csrf} />
        {p.next ? <input type="hidden" name="next" value={p.next} /> : null}
        <label for="username">Username</label>
        <input id="username" name="username" autocomplete="username" required value={p.username ?? ''} aria-describedby={p.error ? 'sign-in-error' : undefined} />
        <label for="password">Password</label>
        <input id="password" name="password" type="password" autocomplete="current-password" required />
        <button type="submit" class="primary">Sign in</button>
      </form>
    </Page>
  );
}

/** Only a path of the portal is a place to go after sign-in (never another site). */
function safeNext(next: unknown): string {
  return typeof next === 'string' && /^\/portal(?:\/[A-Za-z0-9._~\-/]*)?(?:\?[A-Za-z0-9=&._~-]*)?$/.test(next) && !next.startsWith('//') ? next : '/portal';
}

export function signInRoutes(ctx: ServiceContext, sessions: SessionStore, limit: SignInLimit): Hono {
  const app = new Hono();
  app.get('/sign-in', (c) => {
    const note = c.req.query('ended') ? 'Your session has ended. Sign in again.' : c.req.query('reset') ? 'Your password is set. Sign in with it.' : undefined;
    return c.html(<SignInPage csrf={preSessionToken(c)} note={note} />);
  });

  app.post('/sign-in', async (c) => {
    const form = await c.req.parseBody();
    const username = typeof form.username === 'string' ? form.username.slice(0, 200) : '';
    const password = typeof form.password === 'string' ? form.password : '';
    const again = (status: 400 | 401 | 403 | 429, error: string) => c.html(<SignInPage csrf={preSessionToken(c)} username={username} error={error} next={safeNext(form.next)} />, status);
    if (!preSessionTokenValid(c, form._csrf)) return again(403, 'The sign-in form was out of date. Please try again.');
    if (!username || !password) return again(400, 'Give your username and password.');
    const address = clientAddress(c);
    const wait = await limit.blockedFor(username, address);
    if (wait > 0) return again(429, `Too many failed sign-ins. Try again in ${Math.ceil(wait / 60)} min.`);
    const user = await checkCredentials(ctx, username, password);
    if (!user) {
      await limit.failed(username, address);
      return again(401, 'Wrong username or password.');
    }
    await limit.succeeded(username);
    const { token } = await sessions.create(user);
    setSessionCookie(c, token, sessions.ttlSeconds);
    return c.redirect(safeNext(form.next), 303);
  });

  app.post('/sign-out', async (c) => {
    // A sign-out needs the session's CSRF token too: another site must not sign a user out.
    const r = await sessions.check(getCookie(c, SessionCookie));
    if (r.ok) {
      const form = await c.req.parseBody();
      if (!sameToken(typeof form._csrf === 'string' ? form._csrf : undefined, r.session.csrf)) return c.redirect('/portal', 303);
      await sessions.end(r.session);
    }
    clearSessionCookie(c);
    return c.redirect('/portal/sign-in', 303);
  });
  return app;
}

function clientAddress(c: Context): string {
  try {
    return getConnInfo(c).remote.address ?? 'unknown';
  } catch {
    return 'unknown';
  }
}
