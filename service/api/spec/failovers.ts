/** Failovers, their drill reports, and the hardware a failed-over VM gets (service/api/failovers.ts). */
import { z } from 'zod';
import { failoverListQuery, failoverRequestSchema, hardwareSchema, nvramSchema, tenantFailoverListQuery, vmFailoverListQuery } from '../failovers.js';
import { etag, page, time } from './common.js';
import type { RouteDoc } from './registry.js';

const tag = 'failovers';
const id = z.string().regex(/^fo-[a-z0-9-]{1,40}$/);
const action = z.enum(['stop', 'commit', 'revert']);
const kind = z.enum(['test', 'planned', 'unplanned']);

const summary = z.object({
  id: z.string(), tenant: z.string(), vm: z.string(), kind, state: z.string(), goal: z.string(), host: z.string().nullable(), pointId: z.number().int().nullable(),
  requestedAt: time(), readyAt: time().nullable(), endedAt: time().nullable(), error: z.string().nullable(),
});
const list = z.object({ failovers: z.array(summary), ...page });

/** The drill report (service/failover/report.ts). */
export const failoverReport = z.object({
  id: z.string(), tenant: z.string(), vm: z.string(), kind, state: z.string(), goal: z.string(),
  result: z.enum(['in progress', 'ready', 'running', 'committed', 'stopped', 'reverted', 'failed', 'failed back']), host: z.string().nullable(),
  point: z.object({ requested: z.string(), id: z.number().int().nullable(), cycle: z.number().int().nullable(), capturedAt: time().nullable() }),
  rpoSeconds: z.number().nullable(), requestedAt: time(), readyAt: time().nullable(), endedAt: time().nullable(), expiresAt: time().nullable(), rtoSeconds: z.number().nullable(),
  vmGenerationId: z.string(), hardware: z.unknown(),
  steps: z.array(z.object({ step: z.string(), status: z.string(), startedAt: time(), endedAt: time().nullable(), seconds: z.number().nullable(), detail: z.string().nullable(), cause: z.string().nullable() })),
  screenshot: z.object({ takenAt: time(), bytes: z.number().int(), path: z.string() }).nullable(),
  network: z.unknown(),
  publicIps: z.array(z.object({ address: z.string(), drAddress: z.string(), mac: z.string().nullable(), allow: z.array(z.string()), appliedAt: time(), removedAt: time().nullable() })),
  warnings: z.array(z.string()), error: z.string().nullable(), ...etag,
}).describe('the drill report');

const hardware = z.object({
  firmware: z.string(), secureBoot: z.boolean(), cpus: z.number().int(), memoryMiB: z.number().int(), guestOs: z.string(),
  disks: z.record(z.string(), z.object({ bus: z.string(), order: z.number().int() })), readyProbes: z.array(z.looseObject({ kind: z.string() })),
  source: z.string(), sources: z.record(z.string(), z.string()), ...etag,
}).describe('the configuration a failed-over VM gets, and who set each value');

export const failoverRoutes: RouteDoc[] = [
  {
    method: 'post', path: '/v1/tenants/{tenant}/vms/{vm}/failovers', tag, body: failoverRequestSchema, errors: [409, 503],
    summary: 'start a failover (test, planned, unplanned) from a point; a repeat with the same Idempotency-Key answers the first failover, never a second one', ok: { 202: failoverReport, 200: failoverReport.describe('the first failover of this Idempotency-Key') },
  },
  { method: 'get', path: '/v1/tenants/{tenant}/vms/{vm}/failovers', tag, query: vmFailoverListQuery, summary: 'the VM\'s failovers', ok: { 200: list } },
  { method: 'get', path: '/v1/tenants/{tenant}/failovers', tag, query: tenantFailoverListQuery, summary: 'the tenant\'s failovers, oldest request first (active=true: those not ended)', ok: { 200: list } },
  { method: 'get', path: '/v1/tenants/{tenant}/failovers/{id}', tag, params: { id }, summary: 'a failover\'s drill report', ok: { 200: failoverReport } },
  {
    method: 'get', path: '/v1/tenants/{tenant}/failovers/{id}/screenshot.png', tag, params: { id }, summary: 'the console screenshot taken at ready',
    ok: { 200: { description: 'PNG', content: { 'image/png': { schema: { type: 'string', contentMediaType: 'image/png' } } } } },
  },
  { method: 'post', path: '/v1/tenants/{tenant}/failovers/{id}/{action}', tag, params: { id, action }, errors: [409, 503], summary: 'stop (a test failover), commit or revert (a real one)', ok: { 202: failoverReport } },
  { method: 'get', path: '/v1/tenants/{tenant}/vms/{vm}/hardware', tag, summary: 'the configuration a failed-over VM gets', ok: { 200: hardware } },
  { method: 'put', path: '/v1/tenants/{tenant}/vms/{vm}/hardware', tag, body: hardwareSchema, ifMatch: true, summary: 'set it (a GET\'s body may be PUT again)', ok: { 200: hardware } },
  { method: 'post', path: '/v1/tenants/{tenant}/vms/{vm}/nvram', tag, body: nvramSchema, summary: 'import the VM\'s UEFI NVRAM from a file on the service host', ok: { 201: z.object({ tenant: z.string(), vm: z.string(), path: z.string(), bytes: z.number().int() }) } },
  { method: 'get', path: '/v1/failovers', tag, query: failoverListQuery, summary: 'every failover (?tenant=, ?active=true)', ok: { 200: list } },
  { method: 'get', path: '/v1/failovers/{id}', tag, params: { id }, summary: 'a failover\'s drill report', ok: { 200: failoverReport } },
  { method: 'post', path: '/v1/failovers/{id}/{action}', tag, params: { id, action }, errors: [409, 503], summary: 'stop, commit or revert', ok: { 202: failoverReport } },
];
