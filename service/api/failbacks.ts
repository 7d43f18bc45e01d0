/**
 * Failback routes (one file per resource; docs/failback.md). A failback is asked of a failover by its
 * id: hoster-admin, hoster-operator, tenant-admin and tenant-operator may ask (operate), every role
 * may read its report; a tenant role sees only its own tenant's failovers (another's is a 404, as one
 * that does not exist).
 *
 *   POST /v1/failovers/{id}/failback   {shutdownTimeoutSeconds?}  202 the report (200: the live one again)
 *   GET  /v1/failovers/{id}/failback                              the newest failback's report
 */
import type { Context } from 'hono';
import { Hono } from 'hono';
import { z } from 'zod';
import { latestFailbackOf } from '../catalog/failbacks.js';
import type { ServiceContext } from '../context.js';
import { ErrNotFoundHere } from '../errors.js';
import type { FailoverQueues } from '../failover/queue.js';
import { failbackReport } from '../failback/report.js';
import { DefaultShutdownTimeoutSeconds, requestFailback, visibleFailover } from '../failback/request.js';
import { readJson } from '../http/json.js';
import { single } from './etag.js';
import { objectScope } from '../trust/roles.js';
import type { ApiClaims } from '../trust/tokens.js';

export const failbackRequestSchema = z.strictObject({
  shutdownTimeoutSeconds: z.number().int().min(0).max(3600).default(DefaultShutdownTimeoutSeconds)
    .describe('seconds the guest is given to power off after an ACPI power-down before its vCPUs are stopped'),
});

type Env = { Variables: { operator: ApiClaims } };

export function failbackRoutes(ctx: ServiceContext, queues: () => FailoverQueues): Hono<Env> {
  const r = new Hono<Env>();
  const who = (c: Context<Env>) => `${c.get('operator').role}:${c.get('operator').sub}`;
  r.post('/failovers/:id/failback', async (c) => {
    const tenant = objectScope(c.get('operator'), 'operate');
    await visibleFailover(ctx, tenant, c.req.param('id'));
    const body = await readJson(c, failbackRequestSchema);
    const { failback, repeated } = await requestFailback(ctx, queues(), { tenant, failoverId: c.req.param('id'), shutdownTimeoutSeconds: body.shutdownTimeoutSeconds, requestedBy: who(c) });
    return single(c, failbackReport(failback), repeated ? 200 : 202);
  });
  r.get('/failovers/:id/failback', async (c) => {
    const f = await visibleFailover(ctx, objectScope(c.get('operator'), 'read'), c.req.param('id'));
    const fb = await latestFailbackOf(ctx.db, f.id);
    if (!fb) throw ErrNotFoundHere(`failover ${f.id} was never failed back`);
    return single(c, failbackReport(fb));
  });
  return r;
}
