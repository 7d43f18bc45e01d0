/**
 * Audit (docs/api.md, Audit): the mechanism routes use to make a change and its audit row in one
 * transaction, and the read-only route over the log.
 *
 *   GET /v1/audit?tenant=&actor=&from=&to=&limit=&cursor=    newest first; {entries, nextCursor}
 *
 * Hoster roles read every row (hoster-wide rows have no tenant); tenant roles only their tenant's,
 * whatever they ask (another tenant: 404). No route changes or removes rows, and the table refuses it.
 */
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context } from 'hono';
import { Hono } from 'hono';
import { z } from 'zod';
import { isLifeboatError } from '../../shared/errors.js';
import type { AuditRow } from '../catalog/audit.js';
import { insertAudit, listAudit } from '../catalog/audit.js';
import type { Queryable } from '../catalog/db.js';
import type { ServiceContext } from '../context.js';
import { check } from '../http/json.js';
import { requestIdOf } from '../http/problem.js';
import { isHosterRole, mayRead } from '../trust/roles.js';
import type { ApiClaims } from '../trust/tokens.js';

type Env = { Variables: { operator: ApiClaims } };

export interface AuditedChange {
  /** resource.verb: api-key.create, failover.request, … */
  action: string;
  /** What was changed, in words a reader finds it by (a key id, tenant/vm). */
  target: string;
  /** The tenant the change is about; null for hoster-wide objects. */
  tenant: string | null;
}

function sourceOf(c: Context): string | null {
  try {
    return getConnInfo(c).remote.address ?? null;
  } catch {
    return null;
  }
}

function row(c: Context<Env>, change: AuditedChange, result: string) {
  const who = c.get('operator');
  return {
    actor: who.sub, actorKey: who.keyId ?? null, actorRole: who.role, actorTenant: who.tenant ?? null,
    ...change, source: sourceOf(c), requestId: requestIdOf(c) ?? null, result,
  };
}

/**
 * Runs `change` in one transaction with its audit row (result ok): both are committed or neither.
 * When the change throws a LifeboatError (refused, not found, conflict), a row with that code is
 * written after the rollback, and the error goes on. `describe` may look at the change's result to
 * name the target (a new key's id).
 */
export async function audited<T>(ctx: ServiceContext, c: Context<Env>, change: AuditedChange | ((result: T) => AuditedChange), fn: (tx: Queryable) => Promise<T>): Promise<T> {
  try {
    return await ctx.db.transaction(async (tx) => {
      const result = await fn(tx);
      await insertAudit(tx, row(c, typeof change === 'function' ? change(result) : change, 'ok'));
      return result;
    });
  } catch (err) {
    if (isLifeboatError(err) && typeof change !== 'function') await insertAudit(ctx.db, row(c, change, err.code));
    throw err;
  }
}

const MaxAuditPage = 500;
export const auditQuery = z.strictObject({
  tenant: z.string().max(64).optional(),
  actor: z.string().max(200).optional(),
  from: z.iso.datetime({ offset: true }).optional(),
  to: z.iso.datetime({ offset: true }).optional(),
  limit: z.coerce.number().int().min(1).max(MaxAuditPage).default(100),
  cursor: z.string().regex(/^\d{1,18}$/, 'must be the nextCursor of a previous page').optional(),
});

function present(r: AuditRow) {
  return {
    id: r.id, at: new Date(r.at).toISOString(), actor: r.actor, actorKey: r.actorKey, actorRole: r.actorRole, actorTenant: r.actorTenant,
    tenant: r.tenant, action: r.action, target: r.target, source: r.source, requestId: r.requestId, result: r.result,
  };
}

export function auditRoutes(ctx: ServiceContext): Hono<Env> {
  const r = new Hono<Env>();
  r.get('/audit', async (c) => {
    const claims = c.get('operator');
    const q = check(auditQuery, c.req.query(), 'query');
    // Tenant roles read their own tenant's rows; naming another is a 404 like any other tenant route.
    const tenant = isHosterRole(claims.role) ? (q.tenant === undefined ? undefined : mayRead(claims, q.tenant)) : mayRead(claims, q.tenant ?? claims.tenant ?? '');
    const rows = await listAudit(ctx.db, {
      tenant, actor: q.actor, from: q.from ? new Date(q.from) : undefined, to: q.to ? new Date(q.to) : undefined,
      before: q.cursor ? Number(q.cursor) : undefined, limit: q.limit,
    });
    return c.json({ entries: rows.map(present), nextCursor: rows.length === q.limit ? String(rows[rows.length - 1]!.id) : null });
  });
  return r;
}
