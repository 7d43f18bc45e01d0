/**
 * Usage routes of the API (docs/usage.md):
 *
 *   GET /v1/usage?from&to&tenant&format      metered usage per tenant and UTC day, JSON or CSV
 *                                            (Accept: text/csv or format=csv)
 *
 * Hoster roles read every tenant (or the one named); a tenant role reads its own tenant only: its
 * name may be left out, and another tenant's is answered 404 as if it did not exist.
 */
import type { Context } from 'hono';
import { Hono } from 'hono';
import { z } from 'zod';
import { requireTenant } from '../catalog/tenants.js';
import type { ServiceContext } from '../context.js';
import { check, idPattern } from '../http/json.js';
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
  return r;
}
