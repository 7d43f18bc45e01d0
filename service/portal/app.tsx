/**
 * The tenant self-service portal under /portal on the operator API's server (docs/portal.md):
 * server-rendered pages (hono/jsx), htmx from our origin for the live parts. Public: sign-in, the
 * password reset link, the static assets. Everything else needs a session, and every form post the
 * session's CSRF token (security.ts); tenant URLs are /portal/t/{tenant}/…, checked against the
 * session's tenant before any page runs. Pages call the same operations as the API.
 */
import { Hono } from 'hono';
import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { isLifeboatError, LifeboatError } from '../../shared/errors.js';
import { listTenants } from '../catalog/tenants.js';
import type { ServiceContext } from '../context.js';
import type { FailoverQueues } from '../failover/queue.js';
import { bodySizeLimit } from '../http/json.js';
import type { RedisSource } from '../users/sessions.js';
import { portalKeyPrefix, SessionStore } from '../users/sessions.js';
import { SignInLimit } from '../users/sign-in-limit.js';
import { assetRoutes } from './assets.js';
import { dashboardRoutes, tenantPath } from './dashboard.js';
import { drillReportRoutes } from './drill-report.js';
import { failoverRoutes } from './failover.js';
import { failoverWizardRoutes } from './failover-wizard.js';
import { auditRoutes } from './audit.js';
import { mappingRoutes } from './mappings.js';
import { planRoutes } from './plans.js';
import { usageRoutes } from './usage.js';
import { userRoutes } from './users.js';
import { ErrorPage, Page } from './layout.js';
import { resetRoutes } from './reset.js';
import type { PortalEnv } from './security.js';
import { requireCsrf, requireSession, securityHeaders } from './security.js';
import { signInRoutes } from './sign-in.js';
import { vmRoutes } from './vm.js';
import { mutations } from '../api/mutations.js';
import type { Actor } from '../api/mutations.js';
import type { Session } from '../users/sessions.js';

/** The audit row's actor of a portal user. */
function sessionActor(s: Session): Actor {
  return { actor: `user:${s.username}`, actorKey: null, actorRole: s.role, actorTenant: s.tenant };
}

export const MaxFormBytes = 64 * 1024;

export interface PortalOptions {
  redis: RedisSource;
  /** Session lifetime (default users/sessions.ts DefaultSessionSeconds). */
  sessionSeconds?: number | undefined;
  /** The failover queues the API uses (the wizard and the failover pages start and change failovers through them). */
  failoverQueues?: FailoverQueues | undefined;
}

export function portalApp(ctx: ServiceContext, options: PortalOptions): { app: Hono; sessions: SessionStore } {
  const prefix = portalKeyPrefix(JSON.stringify(ctx.config.catalog));
  const sessions = new SessionStore(options.redis, ctx.signer, prefix, options.sessionSeconds);
  const app = new Hono();
  app.use('*', securityHeaders(), bodySizeLimit(MaxFormBytes));
  app.onError((err, c) => errorPage(ctx, err, c));
  assetRoutes(app);
  app.route('/', signInRoutes(ctx, sessions, new SignInLimit(options.redis, prefix)));
  app.route('/', resetRoutes(ctx, sessions));

  const signedIn = new Hono<PortalEnv>();
  // A form's change, like the API's: one transaction with its audit row (api/mutations.ts).
  signedIn.use('*', requireSession(sessions), requireCsrf(), mutations<PortalEnv>(ctx, (c) => sessionActor(c.get('session'))));
  signedIn.onError((err, c) => errorPage(ctx, err, c));
  signedIn.get('/', async (c) => {
    const s = c.get('session');
    if (s.tenant !== null) return c.redirect(tenantPath(s.tenant), 303);
    const first = (await listTenants(ctx.db))[0];
    if (first) return c.redirect(tenantPath(first.name), 303);
    return c.html(<Page title="No tenants" session={s}><h1>No tenants yet</h1><p>Create one with <code>lifeboat-service tenant create</code>.</p></Page>);
  });
  signedIn.route('/', dashboardRoutes(ctx));
  signedIn.route('/', vmRoutes(ctx));
  const queues = () => {
    if (!options.failoverQueues) throw new LifeboatError('unavailable', 'this service process runs without Redis, so it cannot start or change failovers');
    return options.failoverQueues;
  };
  signedIn.route('/', failoverWizardRoutes(ctx, queues)).route('/', drillReportRoutes(ctx)).route('/', failoverRoutes(ctx, queues));
  signedIn.route('/', planRoutes(ctx, queues)).route('/', mappingRoutes(ctx)).route('/', usageRoutes(ctx)).route('/', userRoutes(ctx, sessions)).route('/', auditRoutes(ctx));
  signedIn.all('*', (c) => c.html(<ErrorPage title="Not found" message="There is no such page, or it is not yours to see." session={c.get('session')} />, 404));
  app.route('/', signedIn);
  return { app, sessions };
}

/** A LifeboatError as a page with its status; not_found says nothing of what was asked; anything else is a logged 500. */
function errorPage(ctx: ServiceContext, err: Error, c: Context) {
  const session = (c as Context<PortalEnv>).get('session') as PortalEnv['Variables']['session'] | undefined;
  if (isLifeboatError(err)) {
    const message = err.code === 'not_found' ? 'There is no such page, or it is not yours to see.' : err.message;
    const title = err.code === 'not_found' ? 'Not found' : err.code === 'forbidden' ? 'Not allowed' : err.code === 'invalid_argument' ? 'Not accepted' : 'Not available';
    return c.html(<ErrorPage title={title} message={message} session={session} />, err.status as ContentfulStatusCode);
  }
  ctx.log.error({ err, path: c.req.path }, 'portal request failed');
  return c.html(<ErrorPage title="Something went wrong" message="The service could not answer. Try again; if it persists, tell your hoster." session={session} />, 500);
}
