/**
 * Usage routes of the API (docs/usage.md):
 *
 *   GET /v1/usage?from&to&tenant&format      metered usage per tenant and UTC day, JSON or CSV
 *                                            (Accept: text/csv or format=csv)
 *   GET /v1/tenants/{t}/admission?kind&vms   whether the tenant's VMs (all protected, or vms=a,b)
 *                                            fit its hardware plan and the failover hosts now
 *   GET /v1/tenants/{t}/quotas               its quotas, reservation, use and warnings
 *
 * Hoster roles read every tenant (or the one named); a tenant role reads its own tenant only: its
 * name may be left out, and another tenant's is answered 404 as if it did not exist.
 */
import type { Context } from 'hono';
import { Hono } from 'hono';
import { z } from 'zod';
import { LifeboatError } from '../../shared/errors.js';
import { requireTenant } from '../catalog/tenants.js';
import { getTenantLimits } from '../catalog/usage.js';
import { admissionCheck } from '../failover/admission.js';
import { presentLimits } from '../usage/limits.js';
import { liveTestFailovers, protectedVms, quotaWarnings, replicaBytesNow } from '../usage/quotas.js';
import { resourcesInUse } from '../usage/reservations.js';
import type { ServiceContext } from '../context.js';
import { check, idPattern, pathId } from '../http/json.js';
import { parseRange, usageCsv, usageDays, usageReport } from '../usage/report.js';
import { isHosterRole, mayRead } from '../trust/roles.js';
import type { ApiClaims } from '../trust/tokens.js';

type Env = { Variables: { operator: ApiClaims } };

export const usageQuery = z.strictObject({
  from: z.string().max(40).optional(),
  to: z.string().max(40).optional(),
  tenant: z.string().regex(idPattern, 'must be a tenant name').optional(),
  format: z.enum(['json', 'csv']).optional(),
});

/** CSV when asked by format=csv, or by an Accept that names text/csv and not JSON first. */
function wantsCsv(c: Context<Env>, format: 'json' | 'csv' | undefined): boolean {
  if (format !== undefined) return format === 'csv';
  const accept = (c.req.header('accept') ?? '').toLowerCase();
  const csv = accept.indexOf('text/csv');
  const json = accept.indexOf('application/json');
  return csv >= 0 && (json < 0 || csv < json);
}

/** The routes; `now` is the clock the meter stops at (tests inject theirs). */
export const admissionQuery = z.strictObject({
  kind: z.enum(['test', 'planned', 'unplanned']).default('test'),
  vms: z.string().max(64 * 1024).optional(),
});

export function usageRoutes(ctx: ServiceContext, now: () => Date = () => new Date()): Hono<Env> {
  const r = new Hono<Env>();
  r.get('/usage', async (c) => {
    const q = check(usageQuery, c.req.query(), 'query');
    const claims = c.get('operator');
    // A tenant role names its own tenant, or none (then it is its own).
    const tenant = mayRead(claims, isHosterRole(claims.role) ? q.tenant : q.tenant ?? claims.tenant);
    if (tenant !== undefined) await requireTenant(ctx.db, tenant);
    const at = now();
    const range = parseRange({ from: q.from, to: q.to, tenant }, at);
    if (wantsCsv(c, q.format)) {
      return c.body(usageCsv(await usageDays(ctx.db, range, at)), 200, { 'content-type': 'text/csv; charset=utf-8', 'content-disposition': 'attachment; filename="usage.csv"' });
    }
    return c.json(await usageReport(ctx.db, range, at));
  });
  r.get('/tenants/:tenant/admission', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    await requireTenant(ctx.db, tenant);
    const q = check(admissionQuery, c.req.query(), 'query');
    const names = q.vms === undefined ? undefined : q.vms.split(',').map((v) => v.trim()).filter((v) => v !== '');
    for (const n of names ?? []) if (!idPattern.test(n)) throw new LifeboatError('invalid_argument', `vms: ${JSON.stringify(n.slice(0, 80))} is not a VM name`);
    return c.json(await admissionCheck(ctx, tenant, q.kind, names));
  });
  r.get('/tenants/:tenant/quotas', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    const limits = await getTenantLimits(ctx.db, tenant);
    if (!limits) throw new LifeboatError('not_found', `no tenant ${tenant}`);
    const inUse = (await resourcesInUse(ctx.db)).get(tenant) ?? { cpus: 0, memoryMiB: 0, storageBytes: 0 };
    const used = { protectedVms: await protectedVms(ctx.db, tenant),
      replicaGb: (await replicaBytesNow(ctx.db, tenant)) / 1e9, concurrentTestFailovers: await liveTestFailovers(ctx.db, tenant), failoverHardware: inUse };
    return c.json({ tenant, ...presentLimits(limits), used, warnings: await quotaWarnings(ctx.db, tenant, limits) });
  });
  return r;
}
