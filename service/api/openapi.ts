/**
 * The operator API's OpenAPI 3.1 document. Request bodies are generated from the same zod schemas
 * the routes check, so the document cannot drift from what the server accepts.
 */
import { z } from 'zod';
import { exportSchema } from './export.js';
import { importMediaSchema } from './import-media.js';
import { allowSchema, revokeSchema, tenantCreateSchema, tokenSchema } from './schemas.js';

const error = {
  type: 'object', required: ['error'],
  properties: { error: { type: 'object', required: ['code', 'message'], properties: { code: { type: 'string' }, reason: { type: 'string' }, message: { type: 'string' } } } },
};
const body = (schema: z.ZodType) => ({ required: true, content: { 'application/json': { schema: z.toJSONSchema(schema) } } });
const ok = (description: string) => ({ description, content: { 'application/json': { schema: { type: 'object' } } } });
const errors = { 400: { description: 'bad input', content: { 'application/json': { schema: error } } }, 401: { description: 'no or bad operator token' }, 403: { description: 'not an operator' }, 404: { description: 'no such tenant or VM' } };
const tenantParam = { name: 'tenant', in: 'path', required: true, schema: { type: 'string', pattern: '^[a-z0-9][a-z0-9_-]{0,63}$' } };

export const openApiDocument = {
  openapi: '3.1.0',
  info: { title: 'lifeboat operator API', version: '1' },
  components: { securitySchemes: { operator: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } } },
  security: [{ operator: [] }],
  paths: {
    '/healthz': { get: { security: [], responses: { 200: ok('ready'), 503: ok('starting') } } },
    '/metrics': { get: { security: [], responses: { 200: { description: 'Prometheus text format' } } } },
    '/v1/tenants': {
      get: { summary: 'list tenants with their authorization entries', responses: { 200: ok('{tenants: [...]}'), ...errors } },
      post: { summary: 'create a tenant (and its replica key pair)', requestBody: body(tenantCreateSchema), responses: { 201: ok('the tenant'), 409: { description: 'exists' }, ...errors } },
    },
    '/v1/tenants/{tenant}/authorizations': {
      post: { summary: 'add or update an authorization entry (pattern with at most one *)', parameters: [tenantParam], requestBody: body(allowSchema), responses: { 201: ok('the entry'), ...errors } },
    },
    '/v1/tenants/{tenant}/tokens': {
      post: { summary: 'create a one-time enrollment token', parameters: [tenantParam], requestBody: body(tokenSchema), responses: { 201: ok('{token, expiresAt, endpoint, caFingerprint}'), ...errors } },
    },
    '/v1/tenants/{tenant}/revocations': {
      post: { summary: 'revoke every certificate of a server (effective at its next request)', parameters: [tenantParam], requestBody: body(revokeSchema), responses: { 200: ok('{revokedCertificates}'), ...errors } },
    },
    '/v1/vms': {
      get: { summary: 'VMs with state, health, lastAppliedAt, pendingLogs', parameters: [{ name: 'tenant', in: 'query', required: false, schema: { type: 'string' } }], responses: { 200: ok('{vms: [...]}'), ...errors } },
    },
    '/v1/tenants/{tenant}/vms/{vm}/exports': {
      post: { summary: 'write a flat image of a disk at a point (or latest) to a path on the service host', parameters: [tenantParam, { name: 'vm', in: 'path', required: true, schema: { type: 'string' } }], requestBody: body(exportSchema), responses: { 201: ok('{path, virtualSize}'), 503: { description: 'disk busy' }, ...errors } },
    },
    '/v1/tenants/{tenant}/media-imports': {
      post: { summary: 'import one disk\'s base from external media at a path on the service host (docs/formats/agent-media.md)', parameters: [tenantParam], requestBody: body(importMediaSchema), responses: { 200: ok('{vm, disk, generation, mode, status, chunks, stored, bytes}'), 409: { description: 'media of another tenant, stale generation, or chunks committed differently' }, ...errors } },
    },
    '/v1/tenants/{tenant}/vms/{vm}/points': {
      get: { summary: 'recovery points of a VM', parameters: [tenantParam, { name: 'vm', in: 'path', required: true, schema: { type: 'string' } }], responses: { 200: ok('{points: [{id, createdAt, consistency, latest}]}'), ...errors } },
    },
  },
};
