/**
 * Recovery plan routes (docs/plans.md): plans and their runs. Access (service/trust/roles.ts): reading
 * is `read`; creating, changing and deleting plans, and running, cancelling, approving and stopping
 * runs is `operate` (hoster-admin, hoster-operator, tenant-admin, tenant-operator of the tenant); a
 * manual step whose approver is `hoster` takes a hoster role. A plan or run of another tenant answers
 * 404, as one that does not exist.
 *
 *   GET    /v1/tenants/{t}/plans                         the tenant's plans
 *   POST   /v1/tenants/{t}/plans                         {name, description?, point?, groups} → 201 with the webhook secret (shown once)
 *   GET    /v1/tenants/{t}/plans/{p}                     the plan
 *   PUT    /v1/tenants/{t}/plans/{p}                     {description?, point?, groups} (later runs use it)
 *   DELETE /v1/tenants/{t}/plans/{p}                     with its ended runs (409 while a run is live)
 *   POST   /v1/tenants/{t}/plans/{p}/runs                {mode: test|planned|unplanned} → 202, the run's report
 *   GET    /v1/tenants/{t}/plans/{p}/runs                the plan's runs
 *   GET    /v1/tenants/{t}/plans/{p}/runs/{r}            the run's report (JSON), also at …/report
 *   GET    /v1/tenants/{t}/plans/{p}/runs/{r}/report.html   the printable report
 *   POST   /v1/tenants/{t}/plans/{p}/runs/{r}/cancel     stops the run (a test run's VMs are cleaned up)
 *   POST   /v1/tenants/{t}/plans/{p}/runs/{r}/approve    {note?}: the manual step the run waits at
 *   POST   /v1/tenants/{t}/plans/{p}/runs/{r}/stop       a test run's VMs, all of them, with one call
 */
import type { Context } from 'hono';
import { Hono } from 'hono';
import { z } from 'zod';
import { LifeboatError } from '../../shared/errors.js';
import { newSecret } from '../../shared/protocol/standard-webhooks.js';
import type { PlanRow, PlanRunRow } from '../catalog/plans.js';
import { deletePlan, getPlan, insertPlan, listPlans, listRuns, updatePlan } from '../catalog/plans.js';
import type { ServiceContext } from '../context.js';
import { ErrConflict, ErrNotFoundHere } from '../errors.js';
import type { FailoverQueues } from '../failover/queue.js';
import type { PlanDefinition } from '../plans/definition.js';
import { planBodySchema, planCreateSchema } from '../plans/definition.js';
import { planRunReport, renderReportHtml, reportScreenshots } from '../plans/report.js';
import { approveStep, cancelRun, requestRun, runOf, stopRunVms } from '../plans/runs.js';
import { check, pathId, readJson } from '../http/json.js';
import { ifMatch, single, withEtag } from './etag.js';
import { listQuery, msOf, pageOf, timeRange } from './lists.js';
import { isHosterRole, mayOperate, mayRead } from '../trust/roles.js';
import type { ApiClaims } from '../trust/tokens.js';

type Env = { Variables: { operator: ApiClaims } };

/** The tenant of the path when the caller may read (or operate) there: 404 for another tenant, 403 for a role lacking the access. */
function tenantFor(c: Context<Env>, tenant: string, access: 'read' | 'operate'): string {
  return access === 'read' ? mayRead(c.get('operator'), tenant) : mayOperate(c.get('operator'), tenant);
}

export const runRequestSchema = z.strictObject({ mode: z.enum(['test', 'planned', 'unplanned']) });
export const approveSchema = z.strictObject({ note: z.string().max(500).optional() });
export const planListQuery = listQuery({});
export const runListQuery = listQuery({ state: z.string().max(32).optional(), mode: z.enum(['test', 'planned', 'unplanned']).optional(), ...timeRange });

export function planRoutes(ctx: ServiceContext, queues: () => FailoverQueues): Hono<Env> {
  const r = new Hono<Env>();
  const who = (c: Context<Env>) => `${c.get('operator').role}:${c.get('operator').sub}`;
  const planOf = async (c: Context<Env>, access: 'read' | 'operate'): Promise<PlanRow> => {
    const tenant = tenantFor(c, pathId(c, 'tenant'), access);
    const name = pathId(c, 'plan');
    const plan = await getPlan(ctx.db, tenant, name);
    if (!plan) throw ErrNotFoundHere(`tenant ${tenant} has no plan ${name}`);
    return plan;
  };
  const runIn = async (c: Context<Env>, access: 'read' | 'operate'): Promise<PlanRunRow> => {
    const plan = await planOf(c, access);
    return runOf(ctx, plan.tenant, plan.name, c.req.param('run') ?? '');
  };
  /** Every VM the groups name is one of the tenant's, else 400 naming where. */
  const checkVms = async (tenant: string, def: PlanDefinition) => {
    const names = def.groups.flatMap((g) => g.vms);
    const known = new Set((await ctx.db.query<{ name: string }>('SELECT name FROM vms WHERE tenant = $1 AND name = ANY($2)', [tenant, names])).map((x) => x.name));
    def.groups.forEach((g, gi) => g.vms.forEach((vm, vi) => {
      if (!known.has(vm)) throw new LifeboatError('invalid_argument', `body.groups.${gi}.vms.${vi}: tenant ${tenant} has no VM ${vm}`);
    }));
  };
  const report = async (run: PlanRunRow) => planRunReport(ctx.db, run);
  /** A change of the plan waits for the plan's lock and checks If-Match against what it is now. */
  const unchanged = (c: Context<Env>, plan: PlanRow) => ifMatch(c, ctx.db, `plan:${plan.tenant}/${plan.name}`, async () => {
    const now = await getPlan(ctx.db, plan.tenant, plan.name);
    return now && present(now);
  });

  r.get('/tenants/:tenant/plans', async (c) => {
    const tenant = tenantFor(c, pathId(c, 'tenant'), 'read');
    const q = check(planListQuery, c.req.query(), 'query');
    const page = pageOf(c, q, (await listPlans(ctx.db, tenant)).map(present), { key: (p) => [p.name] });
    return c.json({ plans: page.items.map(withEtag), nextCursor: page.nextCursor });
  });
  r.post('/tenants/:tenant/plans', async (c) => {
    const tenant = tenantFor(c, pathId(c, 'tenant'), 'operate');
    const { name, ...def } = await readJson(c, planCreateSchema);
    await checkVms(tenant, def);
    if (await getPlan(ctx.db, tenant, name)) throw ErrConflict('exists', `tenant ${tenant} already has a plan ${name} (PUT changes it)`);
    const webhookSecret = newSecret();
    const plan = await insertPlan(ctx.db, { tenant, name, definition: def as unknown as Record<string, unknown>, createdBy: who(c), webhookSecret });
    return single(c, present(plan), 201, { webhookSecret });
  });
  r.get('/tenants/:tenant/plans/:plan', async (c) => single(c, present(await planOf(c, 'read'))));
  r.put('/tenants/:tenant/plans/:plan', async (c) => {
    const plan = await planOf(c, 'operate');
    const def = await readJson(c, planBodySchema);
    await unchanged(c, plan);
    await checkVms(plan.tenant, def);
    return single(c, present((await updatePlan(ctx.db, plan.tenant, plan.name, def as unknown as Record<string, unknown>))!));
  });
  r.delete('/tenants/:tenant/plans/:plan', async (c) => {
    const plan = await planOf(c, 'operate');
    await unchanged(c, plan);
    const live = (await listRuns(ctx.db, { tenant: plan.tenant, plan: plan.name, live: true }))[0];
    if (live) throw ErrConflict('run_in_progress', `plan ${plan.name} has run ${live.id} in state ${live.state}; cancel it first`);
    await deletePlan(ctx.db, plan.tenant, plan.name);
    return c.body(null, 204);
  });

  r.post('/tenants/:tenant/plans/:plan/runs', async (c) => {
    const plan = await planOf(c, 'operate');
    const { mode } = await readJson(c, runRequestSchema);
    const run = await requestRun(ctx, queues(), { tenant: plan.tenant, plan: plan.name, mode, requestedBy: who(c) });
    return single(c, await report(run), 202);
  });
  r.get('/tenants/:tenant/plans/:plan/runs', async (c) => {
    const plan = await planOf(c, 'read');
    const q = check(runListQuery, c.req.query(), 'query');
    const page = pageOf(c, q, (await listRuns(ctx.db, { tenant: plan.tenant, plan: plan.name })).map(runSummary), {
      key: (r) => [msOf(r.requestedAt), r.id], at: (r) => r.requestedAt, match: { state: (r) => r.state, mode: (r) => r.mode },
    });
    return c.json({ runs: page.items, nextCursor: page.nextCursor });
  });
  r.get('/tenants/:tenant/plans/:plan/runs/:run', async (c) => single(c, await report(await runIn(c, 'read'))));
  r.get('/tenants/:tenant/plans/:plan/runs/:run/report', async (c) => single(c, await report(await runIn(c, 'read'))));
  r.get('/tenants/:tenant/plans/:plan/runs/:run/report.html', async (c) => {
    const rep = await report(await runIn(c, 'read'));
    return c.html(renderReportHtml(rep, await reportScreenshots(ctx.db, rep)), 200, { 'cache-control': 'private, no-store' });
  });
  // The run (and so the caller's access) first: queues() refuses with 503 in a process without Redis.
  r.post('/tenants/:tenant/plans/:plan/runs/:run/cancel', async (c) => {
    const run = await runIn(c, 'operate');
    return single(c, await report(await cancelRun(ctx, queues(), run, who(c))), 202);
  });
  r.post('/tenants/:tenant/plans/:plan/runs/:run/approve', async (c) => {
    const run = await runIn(c, 'operate');
    const { note } = await readJson(c, approveSchema);
    const hoster = isHosterRole(c.get('operator').role);
    return single(c, await report(await approveStep(ctx, queues(), run, { hoster, who: who(c) }, note)), 202);
  });
  r.post('/tenants/:tenant/plans/:plan/runs/:run/stop', async (c) => {
    const asked = await runIn(c, 'operate');
    const { run, stopping } = await stopRunVms(ctx, queues(), asked, who(c));
    return single(c, await report(run), 202, { stopping });
  });
  return r;
}

function present(p: PlanRow) {
  return { tenant: p.tenant, name: p.name, ...(p.definition as object), createdBy: p.createdBy, createdAt: new Date(p.createdAt).toISOString(), updatedAt: new Date(p.updatedAt).toISOString() };
}

function runSummary(r: PlanRunRow) {
  return {
    id: r.id, tenant: r.tenant, plan: r.plan, mode: r.mode, state: r.state, goal: r.goal, step: r.cursor, steps: r.steps.length,
    requestedBy: r.requestedBy, requestedAt: new Date(r.requestedAt).toISOString(), endedAt: r.endedAt ? new Date(r.endedAt).toISOString() : null, error: r.error,
  };
}
