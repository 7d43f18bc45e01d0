/** The hoster's own routes (service/api/app.ts): tenants, enrollment, VMs, points, files on the service host. */
import { z } from 'zod';
import { exportSchema } from '../export.js';
import { importMediaSchema } from '../import-media.js';
import { allowSchema, pointListQuery, revokeSchema, tenantCreateSchema, tenantListQuery, tenantSettingsSchema, tokenSchema, vmListQuery } from '../schemas.js';
import { etag, limitsFields, page, quotaWarnings, time } from './common.js';
import type { RouteDoc } from './registry.js';

const tag = 'tenants';
const settings = { testFailoverMaxHours: z.number(), testFailoverMaxHoursIsDefault: z.boolean() };
const authorization = z.object({ pattern: z.string(), storage: z.string(), trustGroup: z.string() });
const tenant = z.object({ name: z.string(), createdAt: time(), ...settings, ...limitsFields, authorizations: z.array(authorization), ...etag });

export const tenantRoutes: RouteDoc[] = [
  { method: 'get', path: '/healthz', tag: 'service', open: true, summary: 'ready (200) or starting (503)', ok: { 200: z.object({ status: z.literal('ok') }), 503: z.object({ status: z.literal('starting') }).describe('starting') } },
  { method: 'get', path: '/metrics', tag: 'service', open: true, summary: 'Prometheus metrics', ok: { 200: { description: 'Prometheus text format', content: { 'text/plain': { schema: { type: 'string' } } } } } },
  { method: 'get', path: '/v1/openapi.json', tag: 'service', open: true, summary: 'this document', ok: { 200: { description: 'the OpenAPI 3.1 document', content: { 'application/json': { schema: { type: 'object' } } } } } },
  {
    method: 'post', path: '/v1/failover-callbacks/{host}', tag: 'service', open: true, body: z.unknown(),
    summary: 'the webhook failover driver\'s orchestrator answers here; its Standard Webhooks signature is the credential (docs/failover.md)',
    ok: { 204: { description: 'taken' } }, errors: [400, 401, 404, 409, 413, 500],
  },
  { method: 'post', path: '/v1/tenants', tag, summary: 'create a tenant (and its replica key pair)', body: tenantCreateSchema, errors: [409], ok: { 201: tenant.safeExtend({ replicaKey: z.looseObject({ kty: z.string() }) }).describe('the tenant, and its replica public key') } },
  { method: 'get', path: '/v1/tenants', tag, query: tenantListQuery, summary: 'tenants with their settings, quotas, hardware plan and authorization entries', ok: { 200: z.object({ tenants: z.array(tenant), ...page }) } },
  {
    method: 'patch', path: '/v1/tenants/{tenant}', tag, body: tenantSettingsSchema, ifMatch: true,
    summary: 'change a tenant\'s settings (testFailoverMaxHours; quotas; reservation: its hardware plan); null puts one back to the default or no limit',
    ok: { 200: tenant.safeExtend({ warnings: quotaWarnings }).describe('the tenant with the settings in force, and the quotas it is over') },
  },
  { method: 'post', path: '/v1/tenants/{tenant}/authorizations', tag, summary: 'add or update an authorization entry (server name pattern with at most one *)', body: allowSchema, ok: { 201: authorization.extend({ tenant: z.string() }) } },
  { method: 'post', path: '/v1/tenants/{tenant}/tokens', tag, summary: 'a one-time enrollment token', body: tokenSchema, ok: { 201: z.object({ tenant: z.string(), token: z.string(), expiresAt: time(), endpoint: z.string(), caFingerprint: z.string() }) } },
  { method: 'post', path: '/v1/tenants/{tenant}/revocations', tag, summary: 'revoke every certificate of a server (effective at its next request)', body: revokeSchema, ok: { 200: z.object({ tenant: z.string(), server: z.string(), revokedCertificates: z.number().int() }) } },
  {
    method: 'get', path: '/v1/vms', tag: 'vms', query: vmListQuery, summary: 'every VM with state, health, last applied time, pending logs, failovers, pinned points, disks, quota warnings',
    ok: {
      200: z.object({
        vms: z.array(z.object({
          tenant: z.string(), name: z.string(), state: z.string(), health: z.string(), lastAppliedAt: time().nullable(), pendingLogs: z.number().int(),
          failovers: z.array(z.object({ id: z.string(), kind: z.string(), state: z.string() })),
          pinned: z.object({ points: z.number().int(), heldPoints: z.number().int(), bytes: z.number() }).nullable(),
          disks: z.array(z.looseObject({ id: z.string() })), quotaWarnings,
        })),
        ...page,
      }),
    },
  },
  {
    method: 'get', path: '/v1/tenants/{tenant}/vms/{vm}/points', tag: 'vms', query: pointListQuery, summary: 'recovery points of a VM; each is one VM cycle, the latest applied state is id "latest"',
    ok: { 200: z.object({ points: z.array(z.object({ id: z.string(), createdAt: time(), consistency: z.string(), latest: z.boolean(), cycle: z.number().int().nullable(), capturedAt: time().nullable() })), ...page }) },
  },
  {
    method: 'post', path: '/v1/tenants/{tenant}/vms/{vm}/exports', tag: 'vms', body: exportSchema, errors: [409, 503], summary: 'write a flat image of a disk at a point (or latest) to a path on the service host',
    ok: { 201: z.object({ tenant: z.string(), vm: z.string(), disk: z.string(), point: z.string(), format: z.string(), path: z.string(), virtualSize: z.number() }) },
  },
  {
    method: 'post', path: '/v1/tenants/{tenant}/media-imports', tag: 'vms', body: importMediaSchema, errors: [409], summary: 'import one disk\'s base from media at a path on the service host (docs/formats/agent-media.md)',
    ok: { 200: z.looseObject({ vm: z.string(), disk: z.string(), generation: z.number().int(), mode: z.string(), status: z.string() }) },
  },
];
