/**
 * What every portal answer goes through: security headers with a strict Content-Security-Policy
 * (scripts, styles, images and requests from our origin only; no inline script or style, no
 * framing), the session check of protected pages, the CSRF check of every form post, and the tenant
 * check of every tenant URL. Pages do not check these themselves; these run before any page does.
 */
import type { Context, MiddlewareHandler } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { LifeboatError } from '../../shared/errors.js';
import type { Access } from '../trust/roles.js';
import { roleHas } from '../trust/roles.js';
import type { Session, SessionStore } from '../users/sessions.js';
import { sameToken } from '../users/sessions.js';
import type { Mutation } from '../api/mutations.js';

export type PortalEnv = { Variables: { session: Session; mutation: Mutation } };

export const SessionCookie = 'lifeboat_session';
export const ContentSecurityPolicy = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
  "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'",
].join('; ');

export function securityHeaders(): MiddlewareHandler {
  return async function portalHeaders(c, next) {
    await next();
    // A page may narrow the policy by hashes of its own (the plan run's self-contained report); none widens it elsewhere.
    if (!c.res.headers.has('Content-Security-Policy')) c.header('Content-Security-Policy', ContentSecurityPolicy);
    c.header('X-Content-Type-Options', 'nosniff');
    c.header('X-Frame-Options', 'DENY');
    // Reset links carry their secret in the path: no page sends its address anywhere.
    c.header('Referrer-Policy', 'no-referrer');
    if (!c.res.headers.has('cache-control')) c.header('Cache-Control', 'no-store');
  };
}

/** Secure cookies only where the request came over TLS (a plain-HTTP development server could not set them). */
export function overTls(c: Context): boolean {
  return new URL(c.req.url).protocol === 'https:';
}

export function setSessionCookie(c: Context, token: string, maxAgeSeconds: number): void {
  setCookie(c, SessionCookie, token, { path: '/portal', httpOnly: true, secure: overTls(c), sameSite: 'Lax', maxAge: maxAgeSeconds });
}

export function clearSessionCookie(c: Context): void {
  deleteCookie(c, SessionCookie, { path: '/portal', secure: overTls(c) });
}

/**
 * Protected pages: a live session or a redirect to sign-in (for an htmx request, HX-Redirect so the
 * whole page goes there, not the fragment). An expired or ended session says so on the sign-in page.
 */
export function requireSession(store: SessionStore): MiddlewareHandler<PortalEnv> {
  return async function portalSession(c, next) {
    const token = getCookie(c, SessionCookie);
    const r = await store.check(token);
    if (!r.ok) {
      if (token) clearSessionCookie(c);
      const to = `/portal/sign-in${r.reason === 'missing' || r.reason === 'invalid' ? '' : '?ended=1'}`;
      if (c.req.header('hx-request') === 'true') return c.body(null, 200, { 'HX-Redirect': to });
      return c.redirect(to, 303);
    }
    c.set('session', r.session);
    await next();
  };
}

/** Every state-changing request of a session carries the session's CSRF token in the form field _csrf. */
export function requireCsrf(): MiddlewareHandler<PortalEnv> {
  return async function portalCsrf(c, next) {
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
      const form = await c.req.parseBody();
      const sent = typeof form._csrf === 'string' ? form._csrf : undefined;
      if (!sameToken(sent, c.get('session').csrf)) throw new LifeboatError('forbidden', 'this form is out of date or not from this session: reload the page and try again');
    }
    await next();
  };
}

/**
 * The tenant a tenant URL names, when the session may see it: its own tenant for a tenant's user,
 * any for the hoster's. Another tenant's URL is not_found, exactly as one that does not exist.
 */
export function tenantOf(c: Context<PortalEnv>): string {
  const tenant = c.req.param('tenant') ?? '';
  const s = c.get('session');
  if (s.tenant !== null && s.tenant !== tenant) throw new LifeboatError('not_found', 'no such page');
  return tenant;
}

/** Whether the session's role has a kind of access (the API's table, trust/roles.ts); the tenant is tenantOf's. */
export function sessionMay(s: Session, access: Access): boolean {
  return roleHas(s.role, access);
}
