/**
 * The HTTP edge shared by the agent endpoint and the API: the agent endpoint's errors become
 * `{error: {code, reason?, message}}` with their status (agent protocol §11; the API answers problem
 * details instead, problem.ts); JSON bodies are size-limited and schema-checked
 * before any handler sees them; path ids are validated.
 */
import type { Context, ErrorHandler, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { isLifeboatError, LifeboatError } from '../../shared/errors.js';
import { ServiceError, headersOf, reasonOf } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { IdPattern } from '../../shared/protocol/schemas.js';

export const MaxJsonBodyBytes = 64 * 1024;
/** Ids chosen by agents (agent protocol §1). */
export const idPattern = IdPattern;

export function errorBody(code: string, message: string, reason?: string) {
  return { error: { code, ...(reason ? { reason } : {}), message } };
}

/** onError: LifeboatErrors answer with their status and message; anything else is a logged 500. */
export function errorHandler(log: Logger): ErrorHandler {
  return function handleError(err, c) {
    if (isLifeboatError(err)) return c.json(errorBody(err.code, err.message, reasonOf(err)), err.status as ContentfulStatusCode, headersOf(err));
    log.error({ err, path: c.req.path }, 'request failed');
    return c.json(errorBody('internal', 'internal error'), 500);
  };
}

/**
 * Refuses bodies over maxSize (default MaxJsonBodyBytes) with 413 before reading the rest. The rest is
 * never read, so the connection closes after the answer, and the answer says so: without
 * `Connection: close` a client keeping connections alive sent its next request into the closing one
 * ("other side closed"). The error goes to the app's onError, which answers in the app's format.
 */
export function bodySizeLimit(maxSize = MaxJsonBodyBytes): MiddlewareHandler {
  return bodyLimit({
    maxSize,
    onError: () => {
      throw new ServiceError('too_large', `request body larger than ${maxSize} bytes`, undefined, undefined, { headers: { Connection: 'close' } });
    },
  });
}

/** The request's JSON body, checked against schema; 400 with the first bad field otherwise. */
export async function readJson<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  const type = c.req.header('content-type') ?? '';
  if (!/^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i.test(type)) {
    throw new LifeboatError('unsupported', `request body must be JSON sent as Content-Type: application/json${type ? ` (got ${type.slice(0, 80)})` : ''}`, { status: 415 });
  }
  let json: unknown;
  try {
    json = await c.req.json();
  } catch {
    throw new LifeboatError('invalid_argument', 'request body is not JSON');
  }
  const bad = unstorable(json);
  if (bad !== undefined) throw new LifeboatError('invalid_argument', bad);
  return check(schema, json, 'body');
}

/** Bodies nest no deeper than this (none of ours needs a tenth of it); deeper ones break JSON.stringify. */
export const MaxJsonDepth = 64;

/**
 * What in a parsed body the catalog cannot store, in words, or undefined when nothing: nesting deeper
 * than MaxJsonDepth (JSON.stringify and jsonb give up), or a string or key holding U+0000 (PostgreSQL
 * text and jsonb refuse it) or a lone UTF-16 surrogate (not Unicode; jsonb refuses it). Walks without
 * recursion: a body may nest as deep as its size allows.
 */
export function unstorable(value: unknown): string | undefined {
  const bad = (s: string) => s.includes('\0') || LoneSurrogate.test(s);
  const child = (where: string, key: string | number) => (where.length > 100 ? where : `${where}.${String(key).slice(0, 40)}`);
  const stack: Array<[unknown, string, number]> = [[value, 'body', 0]];
  while (stack.length > 0) {
    const [v, where, depth] = stack.pop()!;
    if (typeof v === 'string') {
      if (bad(v)) return `${where} holds a NUL character or an unpaired surrogate, which no field may`;
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    if (depth >= MaxJsonDepth) return `${where} nests deeper than ${MaxJsonDepth} levels`;
    for (const [k, x] of Object.entries(v)) {
      if (!Array.isArray(v) && bad(k)) return `a key of ${where} holds a NUL character or an unpaired surrogate, which no field may`;
      stack.push([x, child(where, k), depth + 1]);
    }
  }
  return undefined;
}

const LoneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Validates a value against a schema; the error names the first bad field. */
export function check<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  // reportInput: the issue carries the value it refused, so a wrong type is told from a missing field.
  const r = schema.safeParse(value, { reportInput: true });
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path.length > 0 ? issue.path.join('.') : what;
  throw new LifeboatError('invalid_argument', plainIssue(field, issue));
}

/** One zod issue in plain words naming the field ("name must not be empty"), not zod's wording. */
function plainIssue(field: string, issue: z.core.$ZodIssue): string {
  const i = issue as z.core.$ZodIssue & { expected?: string; minimum?: number | bigint; maximum?: number | bigint; origin?: string; keys?: string[]; values?: unknown[]; input?: unknown };
  switch (i.code) {
    case 'invalid_type':
      return i.input === undefined ? `${field} is missing` : `${field} must be ${i.expected === 'object' ? 'an object' : `a ${i.expected}`}`;
    case 'too_small':
      if (i.origin === 'string') return Number(i.minimum) <= 1 ? `${field} must not be empty` : `${field} must have at least ${i.minimum} characters`;
      if (i.origin === 'array') return `${field} must have at least ${i.minimum} items`;
      return `${field} must be at least ${i.minimum}`;
    case 'too_big':
      if (i.origin === 'string') return `${field} must have at most ${i.maximum} characters`;
      if (i.origin === 'array') return `${field} must have at most ${i.maximum} items`;
      return `${field} must be at most ${i.maximum}`;
    case 'unrecognized_keys':
      return `unknown field${(i.keys ?? []).length > 1 ? 's' : ''} ${(i.keys ?? []).join(', ')}`;
    case 'invalid_value':
      return `${field} must be one of ${(i.values ?? []).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_format':
      // A schema's own words ("must be latest or a point id") say more than the format's name.
      return /^Invalid/.test(issue.message) ? `${field} is not a valid ${(i as { format?: string }).format ?? 'value'}` : `${field} ${issue.message}`;
    default:
      return `${field}: ${issue.message}`;
  }
}

/** A path parameter that must be an agent id (vm, disk, tenant). */
export function pathId(c: Context, name: string): string {
  const v = c.req.param(name);
  if (v === undefined || !idPattern.test(v)) throw new LifeboatError('invalid_argument', `${name} ${JSON.stringify(String(v).slice(0, 80))} is not a valid id (1 to 64 of [a-z0-9_-], starting with a letter or digit)`);
  return v;
}

/** Counts every request by surface and final status. */
export function countRequests(metrics: Metrics, surface: 'api' | 'agent'): MiddlewareHandler {
  return async function count(c, next) {
    await next();
    metrics.httpRequests.inc({ surface, status: String(c.res.status) });
  };
}
