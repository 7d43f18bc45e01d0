/**
 * Audit (docs/api.md, Audit): the mechanism routes use to make a change and its audit row in one
 * transaction, and the read-only route over the log.
 *
 *   GET /v1/audit?tenant=&actor=&from=&to=&limit=&cursor=    newest first; {entries, nextCursor}
 *
 * Hoster roles read every row (hoster-wide rows have no tenant); tenant roles only their tenant's,
 * whatever they ask (another tenant: 404). No route changes or removes rows, and the table refuses it.
 */
import type { Context } from 'hono';
import { Hono } from 'hono';
import { z } from 'zod';
import type { AuditRow } from '../catalog/audit.js';
import { listAudit } from '../catalog/audit.js';
import type { Queryable } from '../catalog/db.js';
import type { ServiceContext } from '../context.js';
import { check } from '../http/json.js';
import { cursorKey, ErrBadCursor, listQuery, pageOfRows, timeRange } from './lists.js';
import { isHosterRole, mayRead } from '../trust/roles.js';
import type { ApiClaims } from '../trust/tokens.js';
import type { Actor, AuditedChange, Mutation, MutationEnv } from './mutations.js';

type Env = { Variables: { operator: ApiClaims } };

export type { AuditedChange };

/** The audit row's actor of an API caller. */
export function apiActor(who: ApiClaims): Actor {
  return { actor: who.sub, actorKey: who.keyId ?? null, actorRole: who.role, actorTenant: who.tenant ?? null };
}

/**
 * Names the change a route makes (its audit row's action, target and tenant) and runs it in one
 * savepoint of the request's transaction (mutations.ts), which writes the row. `describe` may look at
 * the change's result to name the target (a new key's id). A route that does not call this still gets
 * its row, described from its route and path.
 */
export async function audited<T>(ctx: ServiceContext, c: Context, change: AuditedChange | ((result: T) => AuditedChange), fn: (tx: Queryable) => Promise<T>): Promise<T> {
  const m = (c as Context<MutationEnv>).get('mutation') as Mutation | undefined;
  if (!m) throw new Error('audited() outside the mutations middleware');
  if (typeof change !== 'function') m.described = change;
  const result = await ctx.db.transaction(fn);
  if (typeof change === 'function') m.described = change(result);
  return result;
}

export const auditQuery = listQuery({ tenant: z.string().max(64).optional(), actor: z.string().max(200).optional(), ...timeRange });

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
    const after = cursorKey(c, q);
    if (after !== undefined && typeof after[0] !== 'number') throw ErrBadCursor();
    const rows = await listAudit(ctx.db, {
      tenant, actor: q.actor, from: q.from ? new Date(q.from) : undefined, to: q.to ? new Date(q.to) : undefined,
      before: after?.[0] as number | undefined, limit: q.limit + 1,
    });
    const page = pageOfRows(c, q, rows, (r) => [Number(r.id)]);
    return c.json({ entries: page.items.map(present), nextCursor: page.nextCursor });
  });
  return r;
}
