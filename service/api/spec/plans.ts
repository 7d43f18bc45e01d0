/** Recovery plans and their runs (service/api/plans.ts; docs/plans.md). */
import { z } from 'zod';
import { approveSchema, planListQuery, runListQuery, runRequestSchema } from '../plans.js';
import { planBodySchema, planCreateSchema } from '../../plans/definition.js';
import { etag, page, time } from './common.js';
import type { RouteDoc } from './registry.js';

const tag = 'plans';
const mode = z.enum(['test', 'planned', 'unplanned']);
const plan = planBodySchema.safeExtend({ tenant: z.string(), name: z.string(), createdBy: z.string(), createdAt: time(), updatedAt: time(), ...etag });
const point = z.object({ id: z.number().int().nullable(), cycle: z.number().int().nullable(), capturedAt: time().nullable() });

/** A run's report (service/plans/report.ts): every step's times, each VM's point, RPO and RTO, failures. */
const runReport = z.object({
  id: z.string(), tenant: z.string(), plan: z.string(), mode, state: z.string(), goal: z.string(), point: z.string(), host: z.string(),
  requestedBy: z.string(), requestedAt: time(), startedAt: time().nullable(), endedAt: time().nullable(),
  waiting: z.object({ step: z.number().int(), name: z.string(), message: z.string(), approver: z.enum(['tenant', 'hoster']) }).nullable(),
  rtoSeconds: z.number().nullable(), allReady: z.boolean(), counts: z.object({ vms: z.number().int(), ready: z.number().int(), failed: z.number().int() }),
  groups: z.array(z.object({ index: z.number().int(), name: z.string().nullable(), vms: z.number().int(), onFailure: z.enum(['stop', 'continue']) })),
  steps: z.array(z.object({
    index: z.number().int().nullable(), step: z.string(), status: z.string(), startedAt: time(), endedAt: time().nullable(), seconds: z.number().nullable(),
    detail: z.string().nullable(), by: z.string().nullable(), attempts: z.number().int(),
  })),
  vms: z.array(z.object({
    vm: z.string(), group: z.number().int(), failover: z.string(), state: z.string(), point, rpoSeconds: z.number().nullable(), readyAt: time().nullable(),
    rtoSeconds: z.number().nullable(), bootSeconds: z.number().nullable(), screenshot: z.object({ takenAt: time(), bytes: z.number().int(), path: z.string() }).nullable(),
    warnings: z.array(z.string()), error: z.string().nullable(),
  })),
  failures: z.array(z.object({ what: z.string(), reason: z.string() })), error: z.string().nullable(), ...etag,
}).describe('the run and its report');
const runSummary = z.object({
  id: z.string(), tenant: z.string(), plan: z.string(), mode, state: z.string(), goal: z.string(), step: z.number().int(), steps: z.number().int(),
  requestedBy: z.string(), requestedAt: time(), endedAt: time().nullable(), error: z.string().nullable(),
});

const base = '/v1/tenants/{tenant}/plans';
export const planRoutes: RouteDoc[] = [
  { method: 'get', path: base, tag, query: planListQuery, summary: 'the tenant\'s recovery plans', ok: { 200: z.object({ plans: z.array(plan), ...page }) } },
  { method: 'post', path: base, tag, body: planCreateSchema, errors: [409], summary: 'create a plan: ordered groups of VMs, actions before and after each; the answer holds the secret of its webhook actions, shown only here', ok: { 201: plan.safeExtend({ webhookSecret: z.string() }) } },
  { method: 'get', path: `${base}/{plan}`, tag, summary: 'one plan', ok: { 200: plan } },
  { method: 'put', path: `${base}/{plan}`, tag, body: planBodySchema, ifMatch: true, summary: 'change a plan (its whole definition)', ok: { 200: plan } },
  { method: 'delete', path: `${base}/{plan}`, tag, errors: [409], ifMatch: true, summary: 'delete a plan without a run in progress', ok: { 204: { description: 'deleted' } } },
  { method: 'post', path: `${base}/{plan}/runs`, tag, body: runRequestSchema, errors: [409, 503], summary: 'run the plan (test, planned, unplanned)', ok: { 202: runReport } },
  { method: 'get', path: `${base}/{plan}/runs`, tag, query: runListQuery, summary: 'the plan\'s runs', ok: { 200: z.object({ runs: z.array(runSummary), ...page }) } },
  { method: 'get', path: `${base}/{plan}/runs/{run}`, tag, summary: 'one run', ok: { 200: runReport } },
  { method: 'get', path: `${base}/{plan}/runs/{run}/report`, tag, summary: 'the run\'s report (JSON)', ok: { 200: runReport } },
  { method: 'get', path: `${base}/{plan}/runs/{run}/report.html`, tag, summary: 'the run\'s report as a printable page', ok: { 200: { description: 'HTML', content: { 'text/html': { schema: { type: 'string' } } } } } },
  { method: 'post', path: `${base}/{plan}/runs/{run}/cancel`, tag, errors: [409, 503], summary: 'cancel a run; its test VMs are cleaned up', ok: { 202: runReport } },
  { method: 'post', path: `${base}/{plan}/runs/{run}/approve`, tag, body: approveSchema, errors: [409, 503], summary: 'approve the manual step the run waits at', ok: { 202: runReport } },
  { method: 'post', path: `${base}/{plan}/runs/{run}/stop`, tag, errors: [409, 503], summary: 'stop a test run\'s VMs together', ok: { 202: runReport.safeExtend({ stopping: z.array(z.string()) }) } },
];
