/**
 * The operator API's OpenAPI 3.1 document. Request bodies are generated from the same zod schemas
 * the routes check, so the document cannot drift from what the server accepts.
 */
import { z } from 'zod';
import { apiKeyCreateSchema } from './api-keys.js';
import { exportSchema } from './export.js';
import { failoverRequestSchema, hardwareSchema, nvramSchema } from './failovers.js';
import { importMediaSchema } from './import-media.js';
import { mappingCreateSchema, mappingPutSchema, poolCreateSchema, poolGrantSchema } from './public-ips.js';
import { webhookChangeSchema, webhookCreateSchema } from './webhooks.js';
import { admissionQuery, usageQuery } from './usage.js';
import { allowSchema, revokeSchema, tenantCreateSchema, tenantSettingsSchema, tokenSchema } from './schemas.js';

/** RFC 9457 problem details (docs/api.md, Errors). */
const error = {
  type: 'object', required: ['type', 'title', 'status', 'detail', 'code'],
  properties: {
    type: { type: 'string', format: 'uri', description: 'https://lifeboat.dev/problems/<code>' }, title: { type: 'string' }, status: { type: 'integer' },
    detail: { type: 'string' }, code: { type: 'string' }, reason: { type: 'string' }, requestId: { type: 'string' },
  },
};
const body = (schema: z.ZodType) => ({ required: true, content: { 'application/json': { schema: z.toJSONSchema(schema) } } });
const ok = (description: string) => ({ description, content: { 'application/json': { schema: { type: 'object' } } } });
const errors = { 400: { description: 'bad input', content: { 'application/problem+json': { schema: error } } }, 401: { description: 'no or bad operator token' }, 403: { description: 'not an operator' }, 404: { description: 'no such tenant or VM' } };
const vmParam = { name: 'vm', in: 'path', required: true, schema: { type: 'string' } };
const idParam = { name: 'id', in: 'path', required: true, schema: { type: 'string', pattern: '^fo-[a-z0-9-]{1,40}$' } };
const report = ok('the drill report: {id, tenant, vm, kind, state, goal, result, host, point {requested, id, cycle, capturedAt}, rpoSeconds, rtoSeconds, requestedAt, readyAt, endedAt, steps [{step, status, startedAt, endedAt, seconds, detail}], screenshot, network {plan, source, comparison}, publicIps [{address, drAddress, mac, allow, appliedAt, removedAt}], warnings, error}');
const tenantRoles = 'hoster-operator, or tenant-admin of the tenant (tenant-viewer reads); another tenant\'s objects answer 404';
const tenantParam = { name: 'tenant', in: 'path', required: true, schema: { type: 'string', pattern: '^[a-z0-9][a-z0-9_-]{0,63}$' } };
const poolParam = { name: 'name', in: 'path', required: true, schema: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' } };
const keyParam = { name: 'id', in: 'path', required: true, schema: { type: 'string', pattern: '^[0-9a-f]{16}$' } };
const addressParam = { name: 'address', in: 'path', required: true, schema: { type: 'string' }, description: 'the public address (IPv6 percent-encoded or not)' };

const subscriptionParam = { name: 'id', in: 'path', required: true, schema: { type: 'string', pattern: '^whs_[A-Za-z0-9_-]{1,40}$' } };
const deliveryParam = { name: 'delivery', in: 'path', required: true, schema: { type: 'string', pattern: '^msg_[A-Za-z0-9_-]{1,40}$' } };

/** The webhook routes (webhooks.ts) under a base: a tenant's, or the hoster-wide ones. */
function webhookPaths(base: string, params: object[], roles: string) {
  const sub = [...params, subscriptionParam];
  const delivery = [...sub, deliveryParam];
  return {
    [`${base}/webhooks`]: {
      get: { summary: `webhook subscriptions. Roles: ${roles}`, parameters: params, responses: { 200: ok('{webhooks: [{id, tenant, url, description, types, enabled, disabledReason, failingSince, createdBy, createdAt, updatedAt}]}'), ...errors } },
      post: { summary: `subscribe a URL to events (types: event types or "*"); the answer carries the secret (whsec_…), shown only here. Roles: ${roles}`, parameters: params, requestBody: body(webhookCreateSchema), responses: { 201: ok('the subscription and its secret'), ...errors } },
    },
    [`${base}/webhooks/{id}`]: {
      get: { summary: `one subscription. Roles: ${roles}`, parameters: sub, responses: { 200: ok('the subscription'), ...errors } },
      patch: { summary: `change a subscription; enabled: true re-enables a disabled one; rotateSecret: a new secret, returned once. Roles: ${roles}`, parameters: sub, requestBody: body(webhookChangeSchema), responses: { 200: ok('the subscription'), ...errors } },
      delete: { summary: `delete a subscription and its deliveries. Roles: ${roles}`, parameters: sub, responses: { 200: ok('{deleted}'), ...errors } },
    },
    [`${base}/webhooks/{id}/test`]: { post: { summary: `send a webhook.test event to this subscription only. Roles: ${roles}`, parameters: sub, responses: { 202: ok('{event, delivery}'), ...errors } } },
    [`${base}/webhooks/{id}/deliveries`]: { get: { summary: `the subscription's deliveries, newest first (?status=pending|succeeded|failed, ?limit=). Roles: ${roles}`, parameters: sub, responses: { 200: ok('{deliveries: [{id, subscription, event, tenant, status, attempts, nextAttemptAt, lastStatus, lastError, createdAt, endedAt}]}'), ...errors } } },
    [`${base}/webhooks/{id}/deliveries/{delivery}`]: { get: { summary: `one delivery with its payload and attempts. Roles: ${roles}`, parameters: delivery, responses: { 200: ok('the delivery (attempts: how many), payload and attemptLog [{attempt, startedAt, latencyMs, ok, status, error, response}]'), ...errors } } },
    [`${base}/webhooks/{id}/deliveries/{delivery}/attempts`]: { get: { summary: `a delivery's attempts. Roles: ${roles}`, parameters: delivery, responses: { 200: ok('{attempts: [...]}'), ...errors } } },
    [`${base}/webhooks/{id}/deliveries/{delivery}/redeliver`]: { post: { summary: `send an ended delivery again (same webhook-id, the retry schedule from the start). Roles: ${roles}`, parameters: delivery, responses: { 202: ok('the delivery'), 409: { description: 'still pending, or the subscription is disabled' }, ...errors } } },
  };
}

export const openApiDocument = {
  openapi: '3.1.0',
  info: { title: 'lifeboat operator API', version: '1' },
  components: { securitySchemes: { operator: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT or API key (lbk_…)' } } },
  security: [{ operator: [] }],
  paths: {
    '/healthz': { get: { security: [], responses: { 200: ok('ready'), 503: ok('starting') } } },
    '/metrics': { get: { security: [], responses: { 200: { description: 'Prometheus text format' } } } },
    '/v1/tenants': {
      get: { summary: 'list tenants with their authorization entries', responses: { 200: ok('{tenants: [...]}'), ...errors } },
      post: { summary: 'create a tenant (and its replica key pair)', requestBody: body(tenantCreateSchema), responses: { 201: ok('the tenant'), 409: { description: 'exists' }, ...errors } },
    },
    '/v1/tenants/{tenant}': {
      patch: { summary: 'change a tenant\'s settings (testFailoverMaxHours; quotas {protectedVms, replicaGb, concurrentTestFailovers}; reservation {cpus, memoryMiB, storageGb}: its hardware plan; null: the service\'s default or no limit)', requestBody: body(tenantSettingsSchema), responses: { 200: ok('the tenant\'s settings in force'), ...errors } },
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
    '/v1/tenants/{tenant}/vms/{vm}/failovers': {
      post: {
        summary: `start a failover (test, planned, unplanned) from a point; Idempotency-Key returns the first answer. Roles: ${tenantRoles}`,
        parameters: [tenantParam, vmParam, { name: 'Idempotency-Key', in: 'header', required: false, schema: { type: 'string', maxLength: 200 } }],
        requestBody: body(failoverRequestSchema),
        responses: { 202: report, 200: ok('the first failover of this Idempotency-Key'), 409: { description: 'no replica, replication unhealthy (test), already failed over' }, 503: { description: 'no failover host has room' }, ...errors },
      },
      get: { summary: `the VM's failovers. Roles: ${tenantRoles}`, parameters: [tenantParam, vmParam], responses: { 200: ok('{failovers: [...]}'), ...errors } },
    },
    '/v1/tenants/{tenant}/failovers': {
      get: { summary: `the tenant's failovers. Roles: ${tenantRoles}`, parameters: [tenantParam, { name: 'active', in: 'query', required: false, schema: { enum: ['true', 'false'] } }], responses: { 200: ok('{failovers: [...]}'), ...errors } },
    },
    '/v1/tenants/{tenant}/failovers/{id}': {
      get: { summary: `a failover's drill report. Roles: ${tenantRoles}`, parameters: [tenantParam, idParam], responses: { 200: report, ...errors } },
    },
    '/v1/tenants/{tenant}/failovers/{id}/screenshot.png': {
      get: { summary: 'the screenshot taken at ready', parameters: [tenantParam, idParam], responses: { 200: { description: 'PNG', content: { 'image/png': {} } }, ...errors } },
    },
    '/v1/tenants/{tenant}/failovers/{id}/{action}': {
      post: {
        summary: `stop (a test failover), commit or revert (a real one). Roles: ${tenantRoles}`,
        parameters: [tenantParam, idParam, { name: 'action', in: 'path', required: true, schema: { enum: ['stop', 'commit', 'revert'] } }],
        responses: { 202: report, 409: { description: 'the action does not apply in the failover\'s kind or state' }, ...errors },
      },
    },
    '/v1/tenants/{tenant}/vms/{vm}/hardware': {
      get: { summary: 'the configuration a failed-over VM gets', parameters: [tenantParam, vmParam], responses: { 200: ok('{firmware, secureBoot, cpus, memoryMiB, guestOs, disks, readyProbes, source}'), ...errors } },
      put: { summary: `set it. Roles: ${tenantRoles}`, parameters: [tenantParam, vmParam], requestBody: body(hardwareSchema), responses: { 200: ok('the configuration'), ...errors } },
    },
    '/v1/tenants/{tenant}/vms/{vm}/nvram': {
      post: { summary: 'import the VM\'s UEFI NVRAM from a file on the service host (hoster-operator)', parameters: [tenantParam, vmParam], requestBody: body(nvramSchema), responses: { 201: ok('{path, bytes}'), ...errors } },
    },
    '/v1/failovers': {
      get: { summary: 'every failover (hoster-operator)', parameters: [{ name: 'tenant', in: 'query', required: false, schema: { type: 'string' } }, { name: 'active', in: 'query', required: false, schema: { enum: ['true', 'false'] } }], responses: { 200: ok('{failovers: [...]}'), ...errors } },
    },
    '/v1/failovers/{id}': {
      get: { summary: 'a failover\'s drill report (hoster-operator)', parameters: [idParam], responses: { 200: report, ...errors } },
    },
    '/v1/failovers/{id}/{action}': {
      post: { summary: 'stop, commit or revert (hoster-operator)', parameters: [idParam, { name: 'action', in: 'path', required: true, schema: { enum: ['stop', 'commit', 'revert'] } }], responses: { 202: report, ...errors } },
    },
    '/v1/public-ip-pools': {
      get: { summary: 'public address pools with every address, its tenant and VM (hoster-operator)', parameters: [{ name: 'tenant', in: 'query', required: false, schema: { type: 'string' } }], responses: { 200: ok('{pools: [{name, total, free, addresses: [{address, tenant, vm}]}]}'), ...errors } },
      post: { summary: 'create a pool from addresses and prefixes (hoster-operator)', requestBody: body(poolCreateSchema), responses: { 201: ok('the pool'), 409: { description: 'exists, or an address is in another pool' }, ...errors } },
    },
    '/v1/public-ip-pools/{name}': {
      get: { summary: 'a pool (hoster-operator)', parameters: [poolParam], responses: { 200: ok('the pool'), ...errors } },
      delete: { summary: 'delete a pool none of whose addresses is granted (hoster-operator)', parameters: [poolParam], responses: { 200: ok('{deleted}'), 409: { description: 'addresses granted' }, ...errors } },
    },
    '/v1/public-ip-pools/{name}/grants': {
      post: { summary: 'grant a tenant count free addresses, or the addresses named (hoster-operator)', parameters: [poolParam], requestBody: body(poolGrantSchema), responses: { 201: ok('{pool, tenant, granted, addresses}'), 200: ok('nothing new granted'), 409: { description: 'too few free, or granted to another tenant' }, ...errors } },
    },
    '/v1/public-ip-pools/{name}/grants/{tenant}': {
      delete: { summary: 'take one address (?address=) or all of the pool\'s back from a tenant (hoster-operator)', parameters: [poolParam, tenantParam, { name: 'address', in: 'query', required: false, schema: { type: 'string' } }], responses: { 200: ok('{pool, tenant, revoked}'), 409: { description: 'an address is mapped' }, ...errors } },
    },
    '/v1/tenants/{tenant}/public-ips': {
      get: { summary: `the public addresses granted to the tenant, each with the VM it is mapped to. Roles: ${tenantRoles}`, parameters: [tenantParam], responses: { 200: ok('{addresses: [{address, pool, vm}]}'), ...errors } },
    },
    '/v1/tenants/{tenant}/public-ip-mappings': {
      get: { summary: `the tenant's public address mappings. Roles: ${tenantRoles}`, parameters: [tenantParam, { name: 'vm', in: 'query', required: false, schema: { type: 'string' } }], responses: { 200: ok('{mappings: [{address, vm, mac, drAddress, allow, test, updatedAt}]}'), ...errors } },
      post: { summary: `map a granted public address 1:1 to a VM's DR address (its NIC's planned address, or drAddress) with a port allow-list (tcp/22, udp/1000-2000, icmp); test: also for test failovers. Roles: ${tenantRoles}`, parameters: [tenantParam], requestBody: body(mappingCreateSchema), responses: { 201: ok('the mapping'), 409: { description: 'the address is mapped already, or the VM address has a public address' }, ...errors } },
    },
    '/v1/tenants/{tenant}/public-ip-mappings/{address}': {
      get: { summary: `one mapping. Roles: ${tenantRoles}`, parameters: [tenantParam, addressParam], responses: { 200: ok('the mapping'), ...errors } },
      put: { summary: `replace one mapping (applies within a tick to a VM running now). Roles: ${tenantRoles}`, parameters: [tenantParam, addressParam], requestBody: body(mappingPutSchema), responses: { 200: ok('the mapping'), ...errors } },
      delete: { summary: `remove one mapping. Roles: ${tenantRoles}`, parameters: [tenantParam, addressParam], responses: { 200: ok('{deleted}'), ...errors } },
    },
    ...webhookPaths('/v1/tenants/{tenant}', [tenantParam], tenantRoles),
    ...webhookPaths('/v1', [], 'hoster-operator; these are the hoster-wide subscriptions (every tenant\'s events and the hoster\'s own)'),
    '/v1/tenants/{tenant}/events': { get: { summary: `the tenant's events, newest first (?type=, ?limit=). Roles: ${tenantRoles}`, parameters: [tenantParam], responses: { 200: ok('{events: [{id, type, timestamp, tenant, data}]}'), ...errors } } },
    '/v1/events': { get: { summary: 'every event, newest first (?tenant=, ?type=, ?limit=). Roles: hoster-operator', responses: { 200: ok('{events: [...]}'), ...errors } } },
    '/v1/usage': {
      get: {
        summary: 'metered usage per tenant and UTC day (docs/usage.md): JSON, or CSV with Accept: text/csv or format=csv. Roles: hoster-operator (every tenant or ?tenant=); tenant roles their own tenant only (another tenant answers 404)',
        parameters: Object.entries(z.toJSONSchema(usageQuery).properties ?? {}).map(([name, schema]) => ({ name, in: 'query', required: false, schema })),
        responses: { 200: { description: '{from, to, until, units, tenants: [{tenant, days: [{day, protectedVmHours, replicaGbHours, bytesReceived, ...}], total}]}', content: { 'application/json': { schema: { type: 'object' } }, 'text/csv': { schema: { type: 'string' } } } }, ...errors },
      },
    },
    '/v1/tenants/{tenant}/admission': {
      get: {
        summary: `whether the tenant's VMs (every protected one, or vms=a,b) fit its hardware plan and the failover hosts now, placed in turn as placement would (docs/usage.md); kind=test (default) holds them to the plan, planned/unplanned only warn. Roles: ${tenantRoles}`,
        parameters: [tenantParam, ...Object.entries(z.toJSONSchema(admissionQuery).properties ?? {}).map(([name, schema]) => ({ name, in: 'query', required: false, schema }))],
        responses: { 200: ok('{tenant, kind, fits, reservation, inUse, needed, vms: [{vm, cpus, memoryMiB, storageBytes, host, problems, warnings}]}'), ...errors },
      },
    },
    '/v1/tenants/{tenant}/quotas': {
      get: { summary: `the tenant's quotas, hardware plan, what it uses and the quotas it is over (set them with PATCH /v1/tenants/{tenant}). Roles: ${tenantRoles}`, parameters: [tenantParam], responses: { 200: ok('{tenant, quotas, reservation, used, warnings}'), ...errors } },
    },
    '/v1/tenants/{tenant}/vms/{vm}/points': {
      get: { summary: 'recovery points of a VM', parameters: [tenantParam, { name: 'vm', in: 'path', required: true, schema: { type: 'string' } }], responses: { 200: ok('{points: [{id, createdAt, consistency, cycle, capturedAt, latest}]}: each point is one VM cycle; capturedAt is the agent\'s capture time of it (null for points of version-1 logs)'), ...errors } },
    },
    '/v1/api-keys': {
      get: { summary: 'API keys, never their secrets (hoster-admin: all or ?tenant=; tenant-admin: its tenant\'s)', parameters: [{ name: 'tenant', in: 'query', required: false, schema: { type: 'string' } }], responses: { 200: ok('{keys: [{id, name, role, tenant, createdAt, createdBy, expiresAt, revokedAt, revokedBy, lastUsedAt}]}'), ...errors } },
      post: { summary: 'create an API key; the answer holds the key (lbk_…), shown only this once', requestBody: body(apiKeyCreateSchema), responses: { 201: ok('the key\'s record and key'), ...errors } },
    },
    '/v1/api-keys/{id}': {
      get: { summary: 'one API key', parameters: [keyParam], responses: { 200: ok('the key\'s record'), ...errors } },
      delete: { summary: 'revoke an API key at once', parameters: [keyParam], responses: { 200: ok('the key\'s record with revokedAt'), ...errors } },
    },
    '/v1/audit': {
      get: {
        summary: 'the audit log, newest first (tenant roles: their tenant only)',
        parameters: ['tenant', 'actor', 'from', 'to', 'limit', 'cursor'].map((name) => ({ name, in: 'query', required: false, schema: { type: 'string' } })),
        responses: { 200: ok('{entries: [{id, at, actor, actorKey, actorRole, actorTenant, tenant, action, target, source, requestId, result}], nextCursor}'), ...errors },
      },
    },
  },
};
