/**
 * The operator API's errors as RFC 9457 problem details (`application/problem+json`), and its request
 * ids. docs/api.md, Errors, is the contract:
 *
 *   {type: "https://lifeboat.dev/problems/<code>", title, status, detail, code, reason?, requestId, …}
 *
 * `type` is one URI per machine code (shared/errors.ts ErrorCode), stable across releases; `code` and
 * `reason` repeat it as extension members for clients that switch on a word. `detail` is the same one
 * line the CLI prints. No stack, no path on the service host beyond what the caller gave. The agent
 * endpoint keeps its `{error: {code, reason?, message}}` (agent protocol §11): agents in the field
 * parse it.
 */
import { randomUUID } from 'node:crypto';
import type { Context, ErrorHandler, MiddlewareHandler, NotFoundHandler } from 'hono';
import type { Logger } from 'pino';
import { isLifeboatError } from '../../shared/errors.js';
import { headersOf, reasonOf } from '../errors.js';

export const ProblemContentType = 'application/problem+json';
export const ProblemTypeBase = 'https://lifeboat.dev/problems/';

/** Titles by code: short, fixed per type (RFC 9457 §3.1.3: the title does not change per occurrence). */
const titles: Record<string, string> = {
  invalid_argument: 'Invalid argument',
  not_found: 'Not found',
  already_exists: 'Already exists',
  corrupt: 'Corrupt data',
  unsupported: 'Unsupported',
  io: 'Input/output error',
  unauthenticated: 'Authentication required',
  forbidden: 'Forbidden',
  conflict: 'Conflict',
  tampered: 'Tampered data',
  unavailable: 'Unavailable',
  too_large: 'Too large',
  rate_limited: 'Too many requests',
  precondition_failed: 'Precondition failed',
  internal: 'Internal error',
};

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  reason?: string;
  requestId?: string;
  [extension: string]: unknown;
}

/** A problem body for a machine code; `extra` adds extension members (never overriding the standard ones). */
export function problem(code: string, status: number, detail: string, extra: { reason?: string | undefined; requestId?: string | undefined; [k: string]: unknown } = {}): Problem {
  const { reason, requestId, ...rest } = extra;
  return {
    ...rest, type: `${ProblemTypeBase}${code}`, title: titles[code] ?? code, status, detail, code,
    ...(reason ? { reason } : {}), ...(requestId ? { requestId } : {}),
  };
}

/** The response for a problem, with its content type and any extra headers. */
export function problemResponse(c: Context, p: Problem, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(p), { status: p.status, headers: { ...headers, 'content-type': ProblemContentType, ...requestIdHeader(c) } });
}

/** onError for the API: LifeboatErrors become their problem; anything else is a logged 500 without detail. */
export function problemHandler(log: Logger): ErrorHandler {
  return function handleProblem(err, c) {
    const requestId = requestIdOf(c);
    if (isLifeboatError(err)) return problemResponse(c, problem(err.code, err.status, err.message, { reason: reasonOf(err), requestId }), headersOf(err));
    log.error({ err, path: c.req.path, requestId }, 'request failed');
    return problemResponse(c, problem('internal', 500, `internal error (request ${requestId ?? 'without id'})`, { requestId }));
  };
}

/** notFound for the API: an unknown route is a not_found problem naming it (cut to a sane length). */
export const routeNotFound: NotFoundHandler = function routeNotFound(c) {
  const path = c.req.path.length > 200 ? `${c.req.path.slice(0, 200)}…` : c.req.path;
  return problemResponse(c, problem('not_found', 404, `no route ${c.req.method.slice(0, 16)} ${path}`, { requestId: requestIdOf(c) }));
};

/** A caller's X-Request-Id is kept when it is 1 to 128 visible ASCII characters without quotes or backslashes. */
const SaneRequestId = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

/**
 * Gives every request an id: the caller's X-Request-Id when sane, else a new UUID. It is echoed in the
 * response's X-Request-Id, in problem bodies and in the log line of a failed request.
 */
export function requestIds(): MiddlewareHandler {
  return async function requestId(c, next) {
    const given = c.req.header('x-request-id');
    c.set('requestId' as never, (given !== undefined && SaneRequestId.test(given) ? given : randomUUID()) as never);
    await next();
    c.header('X-Request-Id', requestIdOf(c));
  };
}

/** The request's id (requestIds), or undefined when that middleware did not run. */
export function requestIdOf(c: Context): string | undefined {
  return (c.get('requestId' as never) as string | undefined) ?? undefined;
}

function requestIdHeader(c: Context): Record<string, string> {
  const id = requestIdOf(c);
  return id ? { 'X-Request-Id': id } : {};
}

/**
 * The one line a client shows for an error answer: a problem's detail, or the `{error: {message}}` of
 * the agent endpoint and of services older than problem details; undefined when the body is neither.
 */
export function errorLine(body: unknown): string | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const b = body as { detail?: unknown; title?: unknown; error?: { message?: unknown } };
  if (typeof b.detail === 'string') return b.detail;
  if (typeof b.error?.message === 'string') return b.error.message;
  return typeof b.title === 'string' ? b.title : undefined;
}
