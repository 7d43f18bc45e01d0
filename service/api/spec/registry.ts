/**
 * The operator API's route registry: each resource's file in this folder describes its routes (method,
 * path, the zod schemas of path, query, body and answers), and `buildDocument` turns them into the
 * OpenAPI 3.1 document with zod's own JSON Schema output (draft 2020-12, the dialect of OpenAPI 3.1).
 * Request schemas are the ones the routes check; answer schemas are checked against the real answers
 * of every route by test/api/openapi.test.ts, which also fails on a served route the registry lacks
 * and on a described route the app does not serve.
 */
import { z } from 'zod';

export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';

/** An answer that is not JSON (CSV, HTML, PNG, Prometheus text), or JSON without a body schema. */
export interface RawAnswer { description: string; content?: Record<string, { schema?: object }>; headers?: Record<string, object> }

export interface RouteDoc {
  method: Method;
  /** The path as OpenAPI writes it: `{param}` for hono's `:param`. */
  path: string;
  summary: string;
  tag: string;
  /** Path parameters whose form is narrower than a string (any other `{param}` is a string). */
  params?: Record<string, z.ZodType>;
  query?: z.ZodObject;
  headers?: Record<string, { schema: z.ZodType; description: string }>;
  body?: z.ZodType;
  /** A request body that is not JSON (the NIC CSV import takes text/csv too). */
  bodyTypes?: string[];
  /** The answers of success: status → the zod schema of its JSON body, or a RawAnswer. */
  ok: Record<number, z.ZodType | RawAnswer>;
  /** Problem statuses this route gives besides those every /v1 route may (Common). */
  errors?: number[];
  /** No bearer credential needed. */
  open?: boolean;
  /** A change of one object that honours If-Match (412 when it names another etag; docs/api.md). */
  ifMatch?: boolean;
}

/** RFC 9457 problem details as the API writes them (docs/api.md, Errors). */
export const problemSchema = z.looseObject({
  type: z.string().regex(/^https:\/\/lifeboat\.dev\/problems\/[a-z_]+$/).describe('https://lifeboat.dev/problems/<code>, one URI per code'),
  title: z.string(),
  status: z.number().int().min(400).max(599),
  detail: z.string().describe('one line saying what is wrong with this request'),
  code: z.string().describe('the machine word at the end of type'),
  reason: z.string().optional().describe('a finer machine word (token_expired, role, …)'),
  requestId: z.string().optional(),
  rows: z.array(z.object({ line: z.number().int(), message: z.string() })).optional().describe('the NIC CSV import: each row refused'),
}).describe('an RFC 9457 problem');

/** The problems any /v1 route may answer: bad input, credentials, role, a missing object or tenant, the rate limit, a bug. */
const Common = [400, 401, 403, 404, 429, 500];
const ProblemText: Record<number, string> = {
  400: 'bad input (path, query or body)', 401: 'no, malformed, expired or revoked credential', 403: 'the role may not do this',
  404: 'no such object, or a tenant that is not the caller\'s', 409: 'conflicts with the state of the object', 413: 'body over the size limit',
  412: 'If-Match names an etag the object no longer has (or the object is gone): nothing changed', 422: 'the Idempotency-Key was used for another request', 429: 'over the API key\'s rate limit (Retry-After)', 500: 'internal error (the log holds the rest, by request id)', 503: 'unavailable now (busy, no capacity, no Redis)',
};

/** Path parameters shared by many routes. */
export const PathParams: Record<string, z.ZodType> = {
  tenant: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/),
};

/** An ISO 8601 UTC time as the API writes them. */
export const time = () => z.string().meta({ format: 'date-time' });

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): Record<string, unknown> {
  const out = z.toJSONSchema(schema, { io, target: 'draft-2020-12', unrepresentable: 'any' }) as Record<string, unknown>;
  delete out.$schema;
  return out;
}

const problemRef = { $ref: '#/components/schemas/Problem' };

function operation(route: RouteDoc) {
  const names = [...route.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]!);
  const parameters: object[] = names.map((name) => ({ name, in: 'path', required: true, schema: jsonSchema(route.params?.[name] ?? PathParams[name] ?? z.string(), 'input') }));
  if (route.query) {
    const q = jsonSchema(route.query, 'input') as { properties?: Record<string, object>; required?: string[] };
    for (const [name, schema] of Object.entries(q.properties ?? {})) parameters.push({ name, in: 'query', required: q.required?.includes(name) ?? false, schema });
  }
  const mutation = route.method !== 'get' && !route.open;
  // One object's answers carry its etag (ETag header and body field); a GET of it honours If-None-Match.
  const single = Object.values(route.ok).some((a) => a instanceof z.ZodObject && 'etag' in a.shape);
  if (single && route.method === 'get') {
    parameters.push({ name: 'If-None-Match', in: 'header', required: false, schema: { type: 'string' }, description: 'etags (or *): 304 without a body when one is the object\'s current etag' });
  }
  if (route.ifMatch) {
    parameters.push({ name: 'If-Match', in: 'header', required: false, schema: { type: 'string' }, description: 'etags (or * for any): the change happens only when one is the object\'s current etag, else 412 and nothing changes; optional' });
  }
  if (mutation) {
    parameters.push({
      name: 'Idempotency-Key', in: 'header', required: false, schema: { type: 'string', minLength: 1, maxLength: 200 },
      description: 'the first answer to this key is kept 24 hours: a repeat of the same request gets it again (Idempotent-Replayed: true) and changes nothing; another request with the key: 422',
    });
  }
  for (const [name, h] of Object.entries(route.headers ?? {})) parameters.push({ name, in: 'header', required: false, description: h.description, schema: jsonSchema(h.schema, 'input') });
  const responses: Record<string, object> = {};
  const etagHeader = { ETag: { description: 'the object\'s strong etag, the same as its body\'s etag field', schema: { type: 'string' } } };
  for (const [status, answer] of Object.entries(route.ok)) {
    const headers = {
      ...(mutation ? { 'Idempotent-Replayed': { description: 'true: the kept answer to a repeat of this request\'s Idempotency-Key', schema: { type: 'string', enum: ['true'] } } } : {}),
      ...(single && answer instanceof z.ZodObject && 'etag' in answer.shape ? etagHeader : {}),
    };
    const withHeaders = Object.keys(headers).length ? { headers } : {};
    responses[status] = answer instanceof z.ZodType
      ? { description: answer.description ?? 'success', ...withHeaders, content: { 'application/json': { schema: jsonSchema(answer, 'output') } } }
      : { ...withHeaders, ...answer };
  }
  if (single && route.method === 'get') responses['304'] = { description: 'not modified: If-None-Match names the current etag', headers: etagHeader };
  const statuses = route.open ? [...(route.errors ?? [])] : [...Common, ...(route.body ? [413] : []), ...(mutation ? [409, 422] : []), ...(route.ifMatch ? [412] : []), ...(route.errors ?? [])];
  for (const s of [...new Set(statuses)].sort()) responses[String(s)] = { description: ProblemText[s] ?? 'problem', content: { 'application/problem+json': { schema: problemRef } } };
  const body = route.body && jsonSchema(route.body, 'input');
  return {
    operationId: `${route.method}${route.path.replace(/^\/v1/, '').replace(/\{(\w+)\}/g, 'By-$1').split(/[^A-Za-z0-9]+/).map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join('')}`,
    summary: route.summary,
    tags: [route.tag],
    ...(route.open ? { security: [] } : {}),
    ...(parameters.length ? { parameters } : {}),
    ...(body ? { requestBody: { required: true, content: Object.fromEntries((route.bodyTypes ?? ['application/json']).map((t) => [t, { schema: t === 'application/json' ? body : { type: 'string' } }])) } } : {}),
    responses,
  };
}

/** The OpenAPI 3.1 document of these routes. */
export function buildDocument(routes: readonly RouteDoc[]) {
  const paths: Record<string, Record<string, object>> = {};
  for (const r of routes) {
    const item = (paths[r.path] ??= {});
    if (item[r.method]) throw new Error(`route ${r.method.toUpperCase()} ${r.path} described twice`);
    item[r.method] = operation(r);
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'lifeboat operator API', version: '1',
      description: 'The hoster\'s and tenants\' API (docs/api.md). Errors are RFC 9457 problems (application/problem+json). Every /v1 route needs `Authorization: Bearer <API key or token>`; the role table in docs/api.md says which roles may call each.',
    },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'API key (lbk_…) or API token (JWT)' } },
      schemas: { Problem: jsonSchema(problemSchema, 'output') },
    },
    security: [{ bearer: [] }],
    tags: [...new Set(routes.map((r) => r.tag))].map((name) => ({ name })),
    paths,
  };
}
