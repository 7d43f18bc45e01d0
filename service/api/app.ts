/**
 * The operator API (default port 8080, docs/api.md): every /v1 route needs a bearer credential and
 * asks service/trust/roles.ts for the access it needs; /healthz, /metrics, the OpenAPI document and
 * its reference page (/api-docs) need none. The CLI's admin subcommands are clients of these routes.
 */
import { Hono } from 'hono';
import type { Context, MiddlewareHandler } from 'hono';
import type { Redis } from 'ioredis';
import type { ServiceContext } from '../context.js';
import { ErrUnauthenticated } from '../errors.js';
import { check, countRequests, bodySizeLimit, pathId, readJson } from '../http/json.js';
import { problemHandler, requestIds, routeNotFound } from '../http/problem.js';
import type { EnqueueMerge } from '../replication/uploads.js';
import type { ApiClaims } from '../trust/tokens.js';
import { verifyApiToken } from '../trust/tokens.js';
import { authenticateApiKey, looksLikeApiKey } from '../trust/api-keys.js';
import { mayAdminister, mayManageAccess, mayRead } from '../trust/roles.js';
import { LifeboatError } from '../../shared/errors.js';
import { WebhookDriver } from '../failover/drivers/webhook.js';
import type { RunningHost } from '../failover/host.js';
import type { FailoverQueues } from '../failover/queue.js';
import { apiKeyRoutes } from './api-keys.js';
import { keyRoutes } from './keys.js';
import { rateLimit } from './rate-limit.js';
import { apiActor, audited, auditRoutes } from './audit.js';
import type { Mutation } from './mutations.js';
import { mutations } from './mutations.js';
import { exportDisk, exportSchema } from './export.js';
import { failbackRoutes } from './failbacks.js';
import { failoverRoutes } from './failovers.js';
import { importMedia, importMediaSchema } from './import-media.js';
import { networkRoutes } from './networks.js';
import { nicRoutes } from './nics.js';
import { openApiDocument } from './openapi.js';
import { planRoutes } from './plans.js';
import { referenceRoutes } from './reference.js';
import { publicIpRoutes } from './public-ips.js';
import { webhookRoutes } from './webhooks.js';
import { usageRoutes } from './usage.js';
import { userRoutes } from './users.js';
import { portalApp } from '../portal/app.js';
import type { RedisSource } from '../users/sessions.js';
import { allowSchema, pointListQuery, revokeSchema, tenantCreateSchema, tenantListQuery, tenantSettingsSchema, tokenSchema, vmListQuery } from './schemas.js';
import { ifMatch, single, withEtag } from './etag.js';
import { msOf, pageOf } from './lists.js';
import { allow, createEnrollToken, createTenant, points, revoke, setTenant, tenantList, tenantOf, vmList } from './operations.js';

type ApiEnv = { Variables: { operator: ApiClaims; mutation: Mutation } };


/**
 * Every /v1 route needs a bearer credential: an API key (`lbk_…`, service/trust/api-keys.ts) or an
 * API token (JWT); each route then asks service/trust/roles.ts for the access it needs.
 */
function authenticate(ctx: ServiceContext): MiddlewareHandler<ApiEnv> {
  const touched = new Map<string, number>();
  return async function apiAuth(c, next) {
    const header = c.req.header('authorization') ?? '';
    const m = /^Bearer +([A-Za-z0-9._-]+) *$/i.exec(header);
    if (!m) throw ErrUnauthenticated('token_required', 'an operator API token is required (Authorization: Bearer …)');
    const credential = m[1]!;
    c.set('operator', looksLikeApiKey(credential) ? await authenticateApiKey(ctx.db, credential, touched) : await verifyApiToken(ctx.signer, credential));
    await next();
  };
}

/**
 * The API app. `redis` gives the portal's sessions their connection (made on first use when the
 * process has none); `limiterRedis`, when the process has Redis, counts requests for the per-key rate
 * limit (rate-limit.ts); without it there is no limit.
 */
export function apiApp(ctx: ServiceContext, ready: () => boolean, enqueue?: EnqueueMerge, failoverQueues?: FailoverQueues, failoverHost?: RunningHost, redis?: RedisSource, limiterRedis?: Redis): Hono<ApiEnv> {
  const { metrics } = ctx;
  const app = new Hono<ApiEnv>();
  app.use('*', countRequests(metrics, 'api'), requestIds());
  app.onError(problemHandler(ctx.log));
  app.notFound(routeNotFound);
  app.get('/healthz', (c) => (ready() ? c.json({ status: 'ok' }) : c.json({ status: 'starting' }, 503)));
  app.get('/metrics', async (c) => c.text(await metrics.registry.metrics(), 200, { 'content-type': metrics.registry.contentType }));
  app.get('/v1/openapi.json', (c) => c.json(openApiDocument));
  referenceRoutes(app);
  // The webhook driver's orchestrator answers here; the Standard Webhooks signature is its credential.
  app.post('/v1/failover-callbacks/:host', bodySizeLimit(1 << 20), async (c) => {
    const driver = failoverHost?.name === c.req.param('host') ? failoverHost.runtime.driver : undefined;
    if (!(driver instanceof WebhookDriver)) throw new LifeboatError('not_found', `no webhook failover host ${c.req.param('host').slice(0, 64)} here`);
    await driver.handleCallback(c.req.raw.headers, Buffer.from(await c.req.arrayBuffer()));
    return c.body(null, 204);
  });

  // The tenant portal (docs/portal.md): its sessions and sign-in limits live in Redis.
  const portal = portalApp(ctx, { redis: redis ?? (() => Promise.reject(new LifeboatError('unavailable', 'this service process runs without Redis, so the portal cannot sign anyone in'))), failoverQueues });
  app.route('/portal', portal.app);

  const v1 = new Hono<ApiEnv>();
  v1.use('*', authenticate(ctx), bodySizeLimit());
  if (limiterRedis) v1.use('*', rateLimit(limiterRedis, { perMinute: ctx.config.api.rateLimitPerMinute, log: ctx.log }));
  // Every mutation: one transaction with its audit row and its Idempotency-Key's answer.
  v1.use('*', mutations<ApiEnv>(ctx, (c) => apiActor(c.get('operator'))));
  const queues = () => {
    if (!failoverQueues) throw new LifeboatError('unavailable', 'this service process runs without Redis, so it cannot start failovers');
    return failoverQueues;
  };
  // Before the failover routes, whose POST /failovers/:id/:action would take `failback` as an action.
  v1.route('/', failbackRoutes(ctx, queues));
  v1.route('/', failoverRoutes(ctx, queues));
  v1.route('/', planRoutes(ctx, queues));
  v1.route('/', nicRoutes(ctx)).route('/', networkRoutes(ctx)).route('/', publicIpRoutes(ctx));
  v1.route('/', webhookRoutes(ctx));
  v1.route('/', usageRoutes(ctx));
  v1.route('/', apiKeyRoutes(ctx)).route('/', auditRoutes(ctx));
  v1.route('/', keyRoutes(ctx));
  // The hoster's own routes (tenants, enrollment, files on the service host); points are a tenant's.
  const hoster = (c: Context<ApiEnv>, check: typeof mayRead) => check(c.get('operator'), undefined);
  // The portal's users, every tenant's: the hoster's access managers (docs/portal.md).
  v1.use('/users', async (c, next) => {
    hoster(c, mayManageAccess);
    await next();
  });
  v1.use('/users/*', async (c, next) => {
    hoster(c, mayManageAccess);
    await next();
  });
  v1.route('/', userRoutes(ctx, () => portal.sessions));
  v1.post('/tenants', async (c) => {
    hoster(c, mayAdminister);
    const { name } = await readJson(c, tenantCreateSchema);
    const made = await audited(ctx, c, { action: 'tenant.create', target: `tenant ${name}`, tenant: name }, (tx) => createTenant(ctx, name, tx));
    return single(c, (await tenantOf(ctx, name))!, 201, { replicaKey: made.replicaKey });
  });
  v1.get('/tenants', async (c) => {
    hoster(c, mayRead);
    const page = pageOf(c, check(tenantListQuery, c.req.query(), 'query'), await tenantList(ctx), { key: (t) => [t.name] });
    return c.json({ tenants: page.items.map(withEtag), nextCursor: page.nextCursor });
  });
  v1.patch('/tenants/:tenant', async (c) => {
    hoster(c, mayAdminister);
    const name = pathId(c, 'tenant');
    const body = await readJson(c, tenantSettingsSchema);
    await ifMatch(c, ctx.db, `tenant:${name}`, () => tenantOf(ctx, name));
    const { tenant, warnings } = await setTenant(ctx, name, body);
    return single(c, tenant, 200, { warnings });
  });
  v1.post('/tenants/:tenant/authorizations', async (c) => {
    hoster(c, mayAdminister);
    return c.json(await allow(ctx, c.req.param('tenant'), await readJson(c, allowSchema)), 201);
  });
  v1.post('/tenants/:tenant/tokens', async (c) => {
    hoster(c, mayAdminister);
    return c.json(await createEnrollToken(ctx, c.req.param('tenant'), (await readJson(c, tokenSchema)).ttl), 201);
  });
  v1.post('/tenants/:tenant/revocations', async (c) => {
    hoster(c, mayAdminister);
    return c.json(await revoke(ctx, c.req.param('tenant'), (await readJson(c, revokeSchema)).server));
  });
  v1.get('/vms', async (c) => {
    hoster(c, mayRead);
    const q = check(vmListQuery, c.req.query(), 'query');
    const page = pageOf(c, q, await vmList(ctx, q.tenant), { key: (v) => [v.tenant, v.name], match: { state: (v) => v.state, health: (v) => v.health } });
    return c.json({ vms: page.items, nextCursor: page.nextCursor });
  });
  v1.get('/tenants/:tenant/vms/:vm/points', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    const q = check(pointListQuery, c.req.query(), 'query');
    // The latest applied state is last whatever its time: it is always the newest point.
    const page = pageOf(c, q, await points(ctx, tenant, c.req.param('vm')), { key: (p) => [p.latest ? 1 : 0, msOf(p.createdAt), p.id], at: (p) => p.createdAt });
    return c.json({ points: page.items, nextCursor: page.nextCursor });
  });
  v1.post('/tenants/:tenant/vms/:vm/exports', async (c) => {
    hoster(c, mayAdminister);
    return c.json(await exportDisk(ctx, c.req.param('tenant'), c.req.param('vm'), await readJson(c, exportSchema)), 201);
  });
  v1.post('/tenants/:tenant/media-imports', async (c) => {
    hoster(c, mayAdminister);
    return c.json(await importMedia(ctx, enqueue, c.req.param('tenant'), await readJson(c, importMediaSchema)));
  });
  app.route('/v1', v1);
  return app;
}
