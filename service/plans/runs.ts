/**
 * What the API and CLI ask of plan runs: start one, cancel it, approve its manual step, stop a test
 * run's VMs. A run is recorded (the catalog row is the authority) with the steps compiled from the
 * plan as it is now and a failover id reserved per VM, then its job is put on a live failover host's
 * queue (job.ts moves it). Every refusal names what is wrong: a plan that does not exist (404, also
 * for another tenant's), a run of that plan still going, VMs no longer protected, no failover host.
 */
import { randomUUID } from 'node:crypto';
import { LifeboatError } from '../../shared/errors.js';
import type { PlanRunRow } from '../catalog/plans.js';
import { addRunStep, getPlan, getRun, insertRun, insertRunVms, listRuns, setRun } from '../catalog/plans.js';
import { listFailovers, listHosts } from '../catalog/failovers.js';
import type { ServiceContext } from '../context.js';
import { ErrConflict, ErrForbidden, ErrNotFoundHere } from '../errors.js';
import { changeGoal, HostStaleMs, newFailoverId } from '../failover/engine.js';
import type { FailoverQueues } from '../failover/queue.js';
import type { PlanAction, PlanDefinition, RunMode, RunStep } from './definition.js';
import { compileSteps, planBodySchema, stepName } from './definition.js';
import { emitPlanRunEvent } from './events.js';

export const PlanRunJobName = 'plan-run';
export const planRunJobId = (id: string): string => `plan-run.${id}`;
/** Short, URL-safe, sortable by time: pr-<ms base36>-<random>. */
export const newRunId = (): string => `pr-${Date.now().toString(36)}-${randomUUID().slice(0, 8)}`;
export const runIdPattern = /^pr-[a-z0-9]{1,12}-[0-9a-f]{8}$/;

export async function enqueueRun(queues: FailoverQueues, run: Pick<PlanRunRow, 'id' | 'host'>): Promise<void> {
  await queues.enqueueJob(run.host, PlanRunJobName, planRunJobId(run.id), { id: run.id });
}

export async function requestRun(ctx: ServiceContext, queues: FailoverQueues, req: { tenant: string; plan: string; mode: RunMode; requestedBy: string }): Promise<PlanRunRow> {
  const { db } = ctx;
  const plan = await getPlan(db, req.tenant, req.plan);
  if (!plan) throw ErrNotFoundHere(`tenant ${req.tenant} has no plan ${req.plan}`);
  const def = planBodySchema.parse(plan.definition);
  const live = (await listRuns(db, { tenant: req.tenant, plan: req.plan, live: true }))[0];
  if (live) throw ErrConflict('run_in_progress', `plan ${req.plan} has run ${live.id} in state ${live.state}; cancel it or wait for it to end`);
  const names = def.groups.flatMap((g) => g.vms);
  const known = new Set((await db.query<{ name: string }>('SELECT name FROM vms WHERE tenant = $1 AND name = ANY($2)', [req.tenant, names])).map((r) => r.name));
  const missing = names.filter((n) => !known.has(n));
  if (missing.length > 0) throw ErrConflict('plan_vm_missing', `plan ${req.plan} names VM${missing.length > 1 ? 's' : ''} that tenant ${req.tenant} no longer has: ${missing.slice(0, 20).join(', ')}${missing.length > 20 ? ` and ${missing.length - 20} more` : ''}`);
  // The run's job goes on the queue of a live failover host (the freshest heartbeat, then by name).
  const hosts = (await listHosts(db)).filter((h) => Date.now() - new Date(h.heartbeatAt).getTime() < HostStaleMs)
    .sort((a, b) => new Date(b.heartbeatAt).getTime() - new Date(a.heartbeatAt).getTime() || a.name.localeCompare(b.name));
  if (!hosts[0]) throw new LifeboatError('unavailable', 'no failover host is running (serve runs one unless failover.embeddedHost is false; else start lifeboat-service failover-host)');
  const steps = compileSteps(def, req.mode);
  const id = newRunId();
  const run = await db.transaction(async (tx) => {
    const row = await insertRun(tx, { id, tenant: req.tenant, plan: req.plan, mode: req.mode, definition: def as unknown as Record<string, unknown>, steps, host: hosts[0]!.name, requestedBy: req.requestedBy });
    await insertRunVms(tx, id, def.groups.flatMap((g, gi) => g.vms.map((vm) => ({ vm, groupIndex: gi, failoverId: newFailoverId() }))));
    const detail = `${req.mode} run of ${names.length} VM(s) in ${def.groups.length} group(s), ${steps.length} steps, point ${def.point}`;
    await addRunStep(tx, id, null, 'requested', 'done', detail, req.requestedBy);
    await emitPlanRunEvent(tx, { type: 'plan_run.step_changed', tenant: req.tenant, plan: req.plan, run: id, mode: req.mode, stepIndex: null, step: 'requested', status: 'done', detail });
    return row;
  });
  await enqueueRun(queues, run);
  return run;
}

/** The run, when it is this tenant's (undefined tenant: the hoster's view); else 404 as one that does not exist. */
export async function runOf(ctx: ServiceContext, tenant: string | undefined, plan: string | undefined, id: string): Promise<PlanRunRow> {
  const run = runIdPattern.test(id) ? await getRun(ctx.db, id) : undefined;
  if (!run || (tenant !== undefined && run.tenant !== tenant) || (plan !== undefined && run.plan !== plan)) throw ErrNotFoundHere(`no plan run ${id.slice(0, 60)}`);
  return run;
}

/** Asks a live run to stop; its job cleans up (test VMs stopped, the planned run's shutdown commands cancelled). */
export async function cancelRun(ctx: ServiceContext, queues: FailoverQueues, run: PlanRunRow, by: string): Promise<PlanRunRow> {
  if (run.endedAt) throw ErrConflict('ended', `plan run ${run.id} is ${run.state}; there is nothing to cancel${run.mode === 'test' ? ' (stop its VMs with …/stop)' : ''}`);
  if (run.goal !== 'cancelled') {
    await ctx.db.transaction(async (tx) => {
      await setRun(tx, run.id, { goal: 'cancelled' });
      await addRunStep(tx, run.id, null, 'cancel requested', 'done', undefined, by);
      await emitPlanRunEvent(tx, { type: 'plan_run.step_changed', tenant: run.tenant, plan: run.plan, run: run.id, mode: run.mode, stepIndex: null, step: 'cancel requested', status: 'done', detail: by });
    });
  }
  await enqueueRun(queues, run);
  return (await getRun(ctx.db, run.id))!;
}

/**
 * Approves the manual step the run waits at. A step whose approver is `hoster` takes a hoster role;
 * a `tenant` step any role that may run the plan. 409 when the run is not waiting.
 */
export async function approveStep(ctx: ServiceContext, queues: FailoverQueues, run: PlanRunRow, caller: { hoster: boolean; who: string }, note?: string): Promise<PlanRunRow> {
  const def = run.definition as unknown as PlanDefinition;
  await ctx.db.transaction(async (tx) => {
    const now = (await getRun(tx, run.id, true))!;
    const step = (now.steps as RunStep[])[now.cursor];
    if (now.state !== 'waiting' || step?.kind !== 'manual') throw ErrConflict('not_waiting', `plan run ${run.id} is ${now.state}${now.endedAt ? '' : ' and waits for no approval'}`);
    if ((step as PlanAction & { kind: 'manual' }).approver === 'hoster' && !caller.hoster) throw ErrForbidden('role', `step ${now.cursor + 1} (${stepName(def, step)}) is approved by the hoster's operators only`);
    const detail = `${step.message} — approved${note ? `: ${note}` : ''}`;
    await addRunStep(tx, run.id, now.cursor, stepName(def, step), 'done', detail, caller.who);
    await emitPlanRunEvent(tx, { type: 'plan_run.step_changed', tenant: run.tenant, plan: run.plan, run: run.id, mode: run.mode, stepIndex: now.cursor, step: stepName(def, step), status: 'done', detail: `${detail} (${caller.who})` });
    await setRun(tx, run.id, { cursor: now.cursor + 1, state: 'running' });
  });
  await enqueueRun(queues, run);
  return (await getRun(ctx.db, run.id))!;
}

/**
 * Stops every live VM of a test run with one call (a live run is cancelled first, which does the
 * same). Real runs' failovers are committed or reverted one by one, never stopped in bulk.
 */
export async function stopRunVms(ctx: ServiceContext, queues: FailoverQueues, run: PlanRunRow, by: string): Promise<{ run: PlanRunRow; stopping: string[] }> {
  if (run.mode !== 'test') throw ErrConflict('wrong_kind', `plan run ${run.id} is ${run.mode}: its failovers are committed or reverted one by one, not stopped`);
  if (!run.endedAt) run = await cancelRun(ctx, queues, run, by);
  const stopping: string[] = [];
  for (const f of await listFailovers(ctx.db, { planRunId: run.id, active: true })) {
    try {
      if (f.goal !== 'stopped') await changeGoal(ctx, queues, undefined, f.id, 'stopped', by);
      stopping.push(f.id);
    } catch (err) {
      // A failover that failed or ended meanwhile is being torn down already.
      if ((err as LifeboatError).code !== 'conflict') throw err;
    }
  }
  return { run, stopping };
}
