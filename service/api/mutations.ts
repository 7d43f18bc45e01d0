/**
 * Every mutation of the API and the portal (POST, PUT, PATCH, DELETE) passes through `mutations()`
 * (docs/api.md, Audit and Idempotency):
 *
 * - its change, its audit row and its idempotency record are one catalog transaction
 *   (catalog/scope.ts): the handler's queries join it, jobs it enqueues go out after the commit, and
 *   a handler that fails (an error, answered as a problem) rolls back everything it wrote; the audit
 *   row of a refusal (its code: forbidden, not_found, invalid_argument, conflict, …) is written after
 *   the rollback. Exactly one row per mutating request that got past authentication.
 * - `Idempotency-Key`: the first answer (status, content type, body) to a caller's key is kept 24
 *   hours; a repeat with the same method, path and body gets that answer again (header
 *   `Idempotent-Replayed: true`) and changes nothing; with another request, 422. Concurrent repeats
 *   wait for the first to commit (the key's row is claimed inside the transaction), so one change
 *   happens. A refusal (4xx) is kept like a success: the repeat gets it again, without trying again;
 *   a server's failure (5xx) and a rate limit (429) are not, so a retry with the key tries again.
 *
 * A few routes work on files on the service host for longer than a transaction should stay open
 * (exports, media imports, NVRAM imports): they run outside it, their audit row written when they end
 * and their key claimed before they start (a repeat while the first runs: 409).
 */
import { createHash } from 'node:crypto';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context, MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import { isLifeboatError, LifeboatError } from '../../shared/errors.js';
import type { AuditInput } from '../catalog/audit.js';
import { insertAudit } from '../catalog/audit.js';
import type { Queryable } from '../catalog/db.js';
import { claimIdempotencyKey, getIdempotencyRecord, keepIdempotentAnswer, pruneIdempotencyKeys, recordIdempotentAnswer, releaseIdempotencyKey } from '../catalog/idempotency.js';
import { inTransaction, RollBack } from '../catalog/scope.js';
import type { ServiceContext } from '../context.js';
import { ErrConflict, ServiceError } from '../errors.js';
import { requestIdOf } from '../http/problem.js';

/** Who makes a change, as its audit row names them. */
export interface Actor {
  /** The token's sub, `key:<id>` for an API key, `user:<name>` for a portal user. */
  actor: string;
  actorKey: string | null;
  actorRole: string;
  actorTenant: string | null;
}

/** What a change is about, when its route names it better than the generic description. */
export interface AuditedChange {
  /** resource.verb: api-key.create, failover.request, … */
  action: string;
  /** What was changed, in words a reader finds it by (a key id, tenant/vm). */
  target: string;
  /** The tenant the change is about; null for hoster-wide objects. */
  tenant: string | null;
}

/** The request's mutation, for handlers that describe their change themselves (audit.ts `audited`). */
export interface Mutation {
  described?: AuditedChange | undefined;
}

export type MutationEnv = { Variables: { mutation: Mutation } };

const Mutating = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const KeyPattern = /^[\x21-\x7e]{1,200}$/;
/** Routes whose work is on files for longer than a transaction should be open. */
const OutsideTransaction = new Set(['/v1/tenants/:tenant/vms/:vm/exports', '/v1/tenants/:tenant/media-imports', '/v1/tenants/:tenant/vms/:vm/nvram']);
const PruneEveryMs = 10 * 60_000;

/** Answers a repeat gets again: all but a server's failure and the passing ones (rate limit, unavailable). */
function kept(status: number): boolean {
  return status < 500 && status !== 429;
}

/** The route (as registered: `/v1/tenants/:tenant/plans/:plan`) the request reached. */
export function routeOf(c: Context): string {
  return matchedRoutes(c).filter((r) => r.method !== 'ALL').at(-1)?.path ?? c.req.path;
}

/**
 * `resource.verb` from a route: the last fixed segment names the resource, the method the verb; a
 * POST to a fixed word that is no plural (`…/runs/:run/cancel`, `…/nic-settings/import`) names the
 * verb, the fixed segment before it the resource, and so does an `:action` parameter.
 */
export function actionOf(method: string, route: string, params: Record<string, string>): string {
  const parts = route.split('/').filter((p) => p !== '' && p !== 'v1' && p !== 'portal');
  const fixed = (p: string | undefined): p is string => p !== undefined && !p.startsWith(':') && p !== '*';
  const last = parts.at(-1);
  const before = (i: number) => parts.slice(0, i).reverse().find(fixed) ?? 'root';
  if (last === ':action') return `${before(parts.length - 1)}.${params.action ?? 'action'}`;
  if (method === 'POST' && fixed(last) && !last.endsWith('s') && parts.length > 1) return `${before(parts.length - 1)}.${last}`;
  const resource = before(parts.length);
  const verb = method === 'POST' ? 'create' : method === 'PUT' ? 'put' : method === 'PATCH' ? 'update' : 'delete';
  return `${resource}.${verb}`;
}

function sourceOf(c: Context): string | null {
  try {
    return getConnInfo(c).remote.address ?? null;
  } catch {
    return null;
  }
}

function resultOf(err: unknown): string {
  return isLifeboatError(err) ? err.code : 'internal';
}

/** The ETag a kept answer had: its body's etag field (api/etag.ts puts the same string in both). */
function etagIn(contentType: string | null, body: string | null): string | undefined {
  if (!contentType?.startsWith('application/json') || body === null || !body.includes('"etag"')) return undefined;
  try {
    const etag = (JSON.parse(body) as { etag?: unknown }).etag;
    return typeof etag === 'string' ? etag : undefined;
  } catch {
    return undefined;
  }
}

async function answerOf(res: Response): Promise<{ status: number; contentType: string | null; body: string }> {
  return { status: res.status, contentType: res.headers.get('content-type'), body: await res.clone().text() };
}

/**
 * The middleware; `actorOf` names the caller (the API's claims, the portal's session). It runs after
 * authentication: a caller without credentials changes nothing and leaves no row.
 */
export function mutations<E extends MutationEnv>(ctx: ServiceContext, actorOf: (c: Context<E>) => Actor): MiddlewareHandler<E> {
  let prunedAt = 0;
  return async function mutation(c, next) {
    if (!Mutating.has(c.req.method)) return next();
    const who = actorOf(c);
    const route = routeOf(c);
    const state: Mutation = {};
    c.set('mutation', state);
    const key = c.req.header('idempotency-key');
    if (key !== undefined && !KeyPattern.test(key)) throw new LifeboatError('invalid_argument', 'Idempotency-Key must be 1 to 200 visible ASCII characters');
    const caller = who.actorKey ? `key:${who.actorKey}` : who.actor;
    const fingerprint = key === undefined ? undefined : createHash('sha256').update(`${c.req.method} ${c.req.path}\n`).update(new Uint8Array(await c.req.arrayBuffer())).digest();
    if (key !== undefined && Date.now() - prunedAt > PruneEveryMs) {
      prunedAt = Date.now();
      await pruneIdempotencyKeys(ctx.db).catch((err: unknown) => ctx.log.warn({ err }, 'pruning idempotency keys failed'));
    }
    const row = (result: string): AuditInput => {
      const params = c.req.param() as Record<string, string>;
      const d = state.described;
      return {
        ...who,
        // A tenant role acts in its own tenant only: its refusals elsewhere are its tenant's to read, not the other's.
        tenant: who.actorTenant ?? d?.tenant ?? params.tenant ?? null,
        action: d?.action ?? actionOf(c.req.method, route, params),
        target: d?.target ?? c.req.path.replace(/^\/(?:v1|portal)(?=\/)/, ''),
        source: sourceOf(c), requestId: requestIdOf(c) ?? null, result,
      };
    };
    /** The kept answer to this key, or undefined when this request is the first. */
    const replay = async (db: Queryable): Promise<Response | undefined> => {
      if (key === undefined || await claimIdempotencyKey(db, caller, key, fingerprint!)) return undefined;
      const first = await getIdempotencyRecord(db, caller, key);
      if (!first) throw ErrConflict('idempotency_key_busy', `a request with Idempotency-Key ${key} ended just now; send it again`);
      if (!first.fingerprint.equals(fingerprint!)) {
        throw new ServiceError('invalid_argument', `Idempotency-Key ${key} was used for another request (another method, path or body) in the last 24 hours`, 'idempotency_key_reused', undefined, { status: 422 });
      }
      if (first.status === null) throw ErrConflict('idempotency_key_busy', `the request with Idempotency-Key ${key} is still running`);
      const etag = etagIn(first.contentType, first.body);
      return new Response([204, 205, 304].includes(first.status) ? null : first.body, {
        status: first.status, headers: { ...(first.contentType ? { 'content-type': first.contentType } : {}), ...(etag ? { etag } : {}), 'idempotent-replayed': 'true' },
      });
    };

    if (OutsideTransaction.has(route)) {
      const again = await replay(ctx.db);
      if (again) return again;
      await next();
      const result = c.error ? resultOf(c.error) : c.res.status < 400 ? 'ok' : `status_${c.res.status}`;
      if (key !== undefined) {
        if (kept(c.res.status)) await recordIdempotentAnswer(ctx.db, caller, key, await answerOf(c.res));
        else await releaseIdempotencyKey(ctx.db, caller, key);
      }
      await insertAudit(ctx.db, row(result));
      return;
    }

    let failed: unknown;
    try {
      await inTransaction(ctx.db, async (tx) => {
        const again = await replay(tx);
        if (again) {
          c.res = again;
          return;
        }
        await next();
        if (c.error) {
          failed = c.error;
          throw new RollBack();
        }
        await insertAudit(tx, row(c.res.status < 400 ? 'ok' : `status_${c.res.status}`));
        if (key !== undefined) {
          if (kept(c.res.status)) await recordIdempotentAnswer(tx, caller, key, await answerOf(c.res));
          else await releaseIdempotencyKey(tx, caller, key);
        }
      }, (err) => ctx.log.error({ err, requestId: requestIdOf(c) }, 'work after a committed change failed (the reconciler retries it)'));
    } catch (err) {
      if (!(err instanceof RollBack)) throw err;
    }
    if (failed === undefined) return;
    // The change rolled back; its refusal is kept: the audit row, and the answer for the key (a repeat
    // gets the same refusal without trying again), both in one transaction.
    const answer = kept(c.res.status) && key !== undefined ? await answerOf(c.res) : undefined;
    await ctx.db.transaction(async (tx) => {
      await insertAudit(tx, row(resultOf(failed)));
      if (answer) await keepIdempotentAnswer(tx, caller, key!, fingerprint!, answer);
    });
  };
}
