/**
 * Job `plan-run` (queue failover-<host>, one job per run: jobId plan-run.<id>, run by the host the
 * run was placed on).
 *
 * Input: a run id. The job reads the run's row and runs the step at its cursor, then the next, until
 * the run ends or waits for a manual approval (the approval adds the job again). Before each step and
 * between the slices of every wait it reads the goal, so a cancel is seen within a second or so.
 * Steps (definition.ts): shutdown (planned: the agent of each VM of the group shuts it down and ships
 * its final cycle, as a planned failover asks), cut (one point per VM, all taken before any group
 * starts, pinned for the run), start (the group's failovers requested, waited for until each has left
 * prepare), wait-ready, delay, webhook, manual.
 * Output: the run's state (completed, failed, cancelled), its step rows, its VMs' points and failovers.
 * Failure codes: a step that fails is recorded failed with its reason; the group's policy then ends
 * the run (stop: state failed) or goes on to the next step (continue). A cut that throws ends the run.
 * Idempotent: a step's row is written before its side effect and the cursor moves in the same
 * transaction as the step's end, so a killed worker runs the step at the cursor again from its start:
 * the shutdown commands are one per reserved failover id, a VM's point is kept once chosen, the
 * failovers are requested with an idempotency key per run and VM, a delay counts from its first start,
 * a webhook keeps its message id.
 */
import { LifeboatError, userMessage } from '../../shared/errors.js';
import type { Queryable } from '../catalog/db.js';
import type { FailoverRow } from '../catalog/failovers.js';
import { listFailovers } from '../catalog/failovers.js';
import { pinPoint, unpinPoint } from '../catalog/pins.js';
import type { PlanRunRow, RunStepRow, RunVmRow } from '../catalog/plans.js';
import { addRunStep, getRun, listRunVms, listRuns, planWebhookSecret, setRun, setRunVm, stepStartedAt, takeStrandedRuns } from '../catalog/plans.js';
import { awaitFinalCycle, cancelFinalCycle, finalCycleCommand } from '../commands/planned.js';
import { changeGoal, requestFailover } from '../failover/engine.js';
import type { HostExtension } from '../failover/host.js';
import type { HostRuntime } from '../failover/job.js';
import { CutPointTimeoutMs, cutAtCycle } from '../failover/job.js';
import type { FailoverQueues } from '../failover/queue.js';
import { cutPoint } from '../workers/cut-point.js';
import type { PlanDefinition, RunStep } from './definition.js';
import { stepName } from './definition.js';
import { emitPlanRunEvent } from './events.js';
import { enqueueRun, PlanRunJobName } from './runs.js';
import { callWebhook } from './webhook-action.js';

/** Waits (for failovers, commands, a delay) are asked in slices this long, reading the goal between them. */
const SliceMs = 1000;
/** Points are cut for this many VMs at once. */
const CutConcurrency = 8;
/** How long a cancel waits for a test run's VMs to be torn down. */
const CancelWaitMs = 10 * 60_000;

/** A wait ended by a cancel or by the host stopping: the run's loop reads which. */
const Cancelled = Symbol('cancelled');
type Outcome = { status: 'done' | 'failed'; detail: string } | typeof Cancelled;

/**
 * A host's part for plan runs (one per host): their jobs on its queue and their reconciler. When the
 * host stops, a running job returns within a slice, leaving its step started; the next host resumes it.
 */
export function planRunExtension(): HostExtension {
  let closing = false;
  return {
    jobName: PlanRunJobName,
    run: (rt, queues, id) => runPlanRunJob(rt, queues, id, () => closing),
    async reconcile(rt, queues, running) {
      await adoptStrandedRuns(rt);
      for (const run of await listRuns(rt.ctx.db, { host: rt.hostName, live: true })) {
        if (!running.has(run.id) && (run.state !== 'waiting' || run.goal === 'cancelled')) await enqueueRun(queues, run);
      }
    },
    stop() {
      closing = true;
    },
  };
}

/** A failover host silent this long (its heartbeat: every 5 s) has died: its live runs move to a host that is alive. */
export const StrandedAfterMs = 5 * 60_000;

/**
 * Takes the live runs of hosts whose heartbeat is older than StrandedAfterMs (or that are gone from
 * the catalog), each with a run step and a plan_run.step_changed event (step `host`, status `moved`)
 * in the same transaction; the loop after it queues them here. A run resumes where its cursor is:
 * its steps are idempotent, as after any restart.
 */
export async function adoptStrandedRuns(rt: HostRuntime, staleMs = StrandedAfterMs): Promise<number> {
  return rt.ctx.db.transaction(async (tx) => {
    const taken = await takeStrandedRuns(tx, rt.hostName, staleMs);
    for (const r of taken) {
      const detail = `failover host ${r.from} ${r.heartbeatAt ? `silent since ${new Date(r.heartbeatAt).toISOString()}` : 'is gone'}; the run moved to host ${rt.hostName}`;
      await addRunStep(tx, r.id, null, 'host', 'done', detail);
      await emitPlanRunEvent(tx, { type: 'plan_run.step_changed', tenant: r.tenant, plan: r.plan, run: r.id, mode: r.mode, stepIndex: null, step: 'host', status: 'moved', detail });
      rt.log.warn({ run: r.id, from: r.from }, detail);
    }
    return taken.length;
  });
}

const holder = (runId: string) => `plan-run:${runId}`;
const reasonOf = (err: unknown) => userMessage(err) ?? (err instanceof Error ? err.message : String(err));

export async function runPlanRunJob(rt: HostRuntime, queues: FailoverQueues, id: string, closing: () => boolean = () => false): Promise<void> {
  const { db } = rt.ctx;
  for (;;) {
    if (closing()) return;
    const run = await getRun(db, id);
    if (!run || run.endedAt) return;
    if (run.goal === 'cancelled') return cancel(rt, queues, run, closing);
    if (run.state === 'waiting') return;
    const def = run.definition as unknown as PlanDefinition;
    const steps = run.steps as RunStep[];
    if (run.state === 'requested') await setRun(db, id, { state: 'running', startedAt: new Date() });
    const step = steps[run.cursor];
    if (!step) return end(rt, run, 'completed', null);
    const name = stepName(def, step);
    if (step.kind === 'manual') {
      await db.transaction(async (tx) => {
        await setRun(tx, id, { state: 'waiting' });
        await record(tx, run, run.cursor, name, 'waiting', step.message);
      });
      return;
    }
    await record(db, run, run.cursor, name, 'started', describe(step));
    let outcome: Outcome;
    try {
      outcome = await execute(rt, queues, run, step, closing);
    } catch (err) {
      rt.log.error({ run: id, step: name, err }, 'plan run step failed');
      outcome = { status: 'failed', detail: reasonOf(err) };
    }
    if (outcome === Cancelled) continue;
    const stop = outcome.status === 'failed' && (step.kind === 'cut' || def.groups[step.group]?.onFailure !== 'continue');
    const { status, detail } = outcome;
    await db.transaction(async (tx) => {
      await record(tx, run, run.cursor, name, status, detail);
      await setRun(tx, id, { cursor: run.cursor + 1 });
    });
    if (stop) return end(rt, run, 'failed', `${name}: ${detail}`);
  }
}

/** A step's row and its event (a manual step waiting: plan_run.manual_step_waiting), on db (a transaction when it has to be one with other changes). */
async function record(db: Queryable, run: PlanRunRow, index: number | null, step: string, status: RunStepRow['status'], detail: string | null): Promise<void> {
  await addRunStep(db, run.id, index, step, status, detail ?? undefined);
  await emitPlanRunEvent(db, {
    type: status === 'waiting' ? 'plan_run.manual_step_waiting' : 'plan_run.step_changed',
    tenant: run.tenant, plan: run.plan, run: run.id, mode: run.mode, stepIndex: index, step, status, detail,
  });
}

function describe(step: RunStep): string | null {
  switch (step.kind) {
    case 'wait-ready': return `every VM of the group ready within ${step.timeoutSeconds} s`;
    case 'delay': return `${step.seconds} s`;
    case 'webhook': return `POST ${step.url} (until 2xx, ${step.timeoutSeconds} s at most)`;
    default: return null;
  }
}

async function execute(rt: HostRuntime, queues: FailoverQueues, run: PlanRunRow, step: RunStep, closing: () => boolean): Promise<Outcome> {
  // Asked between the slices of every wait: a cancel, or the host stopping (the step is left started, to be run again).
  const cancelled = async () => closing() || (await getRun(rt.ctx.db, run.id))?.goal === 'cancelled';
  switch (step.kind) {
    case 'shutdown': return shutdown(rt, run, step.group, cancelled);
    case 'cut': return cut(rt, run);
    case 'start': return start(rt, queues, run, step.group, cancelled);
    case 'wait-ready': return waitReady(rt, run, step.group, step.timeoutSeconds, cancelled);
    case 'delay': return delay(rt, run, step.seconds, cancelled);
    case 'webhook': return webhook(rt, run, step, cancelled);
    case 'manual': throw new Error('a manual step is not executed: the run waits at it');
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const failedVms = (vms: { vm: string; reason: string }[]) => vms.map((v) => `${v.vm}: ${v.reason}`).join('; ');

/**
 * Planned: each VM's agent, over its command channel, shuts the VM down and ships its final cycle
 * (the command a planned failover sends, named by the failover id the run reserved for the VM).
 */
async function shutdown(rt: HostRuntime, run: PlanRunRow, group: number, cancelled: () => Promise<boolean>): Promise<Outcome> {
  const { db } = rt.ctx;
  const vms = (await listRunVms(db, run.id, group)).filter((v) => v.finalCycle === null && v.error === null);
  const ref = (v: RunVmRow) => ({ id: v.failoverId, tenant: run.tenant, vm: v.vm });
  for (const v of vms) await finalCycleCommand(db, ref(v));
  const failed: { vm: string; reason: string }[] = [];
  let pending = vms;
  while (pending.length > 0) {
    if (await cancelled()) return Cancelled;
    const still: RunVmRow[] = [];
    for (const v of pending) {
      try {
        const r = await awaitFinalCycle(db, ref(v), 0);
        if (r) await setRunVm(db, run.id, v.vm, { finalCycle: r.cycle });
        else still.push(v);
      } catch (err) {
        failed.push({ vm: v.vm, reason: reasonOf(err) });
        await setRunVm(db, run.id, v.vm, { error: `shutdown: ${reasonOf(err)}` });
      }
    }
    pending = still;
    if (pending.length > 0) await sleep(SliceMs);
  }
  if (failed.length > 0) return { status: 'failed', detail: `${failed.length} of ${vms.length} VM(s) were not shut down with a final cycle: ${failedVms(failed)}` };
  return { status: 'done', detail: `${vms.length} VM(s) shut down at the source, final cycles shipped` };
}

/**
 * One point per VM, every one taken before any group starts, and pinned for the run until its
 * failover pins it: latest (cut on demand; a real run falls back to the newest complete point),
 * latest-consistent, a time (the newest point captured at or before it), or for a planned run the
 * point at the VM's final cycle. A VM without a point is failed at its group's start.
 */
async function cut(rt: HostRuntime, run: PlanRunRow): Promise<Outcome> {
  const { db } = rt.ctx;
  const def = run.definition as unknown as PlanDefinition;
  const all = await listRunVms(db, run.id);
  const todo = all.filter((v) => v.pointId === null && v.error === null);
  const failed: { vm: string; reason: string }[] = [];
  const one = async (v: RunVmRow) => {
    try {
      const p = await pointFor(rt, run, def, v);
      await pinPoint(db, p.id, holder(run.id));
      await setRunVm(db, run.id, v.vm, { pointId: p.id, cycle: p.cycle, capturedAt: p.capturedAt });
    } catch (err) {
      failed.push({ vm: v.vm, reason: reasonOf(err) });
      await setRunVm(db, run.id, v.vm, { error: `point: ${reasonOf(err)}` });
    }
  };
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(CutConcurrency, todo.length) }, async () => {
    while (next < todo.length) await one(todo[next++]!);
  }));
  const had = all.filter((v) => v.error !== null).length;
  return {
    status: 'done',
    detail: `${todo.length - failed.length} point(s) chosen (${def.point}${run.mode === 'planned' ? ', at the final cycles' : ''})${failed.length ? `; no point for ${failedVms(failed)}` : ''}${had ? `; ${had} VM(s) failed before` : ''}`,
  };
}

interface Chosen { id: number; cycle: number | null; capturedAt: Date }

async function pointFor(rt: HostRuntime, run: PlanRunRow, def: PlanDefinition, v: RunVmRow): Promise<Chosen> {
  const { db } = rt.ctx;
  const vm = { tenant: run.tenant, vm: v.vm };
  if (run.mode === 'planned') {
    if (v.finalCycle === null) throw new Error('no final cycle was shipped');
    return cutAtCycle(rt, vm, Number(v.finalCycle));
  }
  const newest = async (where: string, params: unknown[]) => {
    const row = (await db.query<{ id: number; cycle: number | null; capturedAt: Date }>(`SELECT id, cycle, coalesce(captured_at, created_at) AS "capturedAt" FROM recovery_points
      WHERE tenant = $1 AND vm = $2 ${where} ORDER BY coalesce(captured_at, created_at) DESC, id DESC LIMIT 1`, [run.tenant, v.vm, ...params]))[0];
    return row ? { id: Number(row.id), cycle: row.cycle === null ? null : Number(row.cycle), capturedAt: new Date(row.capturedAt) } : undefined;
  };
  if (def.point === 'latest') {
    try {
      return await cutPoint(rt.ctx, rt.redis, { ...vm, timeoutMs: CutPointTimeoutMs, lockPrefix: rt.lockPrefix });
    } catch (err) {
      // A real failover is never refused for the state of replication: the newest complete point.
      const fallback = run.mode === 'unplanned' ? await newest('', []) : undefined;
      if (!fallback) throw err;
      return fallback;
    }
  }
  if (def.point === 'latest-consistent') {
    const p = await newest(`AND consistency = 'application'`, []);
    if (!p) throw new LifeboatError('conflict', `VM ${v.vm} has no application-consistent recovery point`);
    return p;
  }
  const p = await newest('AND coalesce(captured_at, created_at) <= $3', [def.point]);
  if (!p) throw new LifeboatError('conflict', `VM ${v.vm} has no recovery point captured at or before ${def.point}`);
  return p;
}

/** The group's failovers requested at the run's points, then waited for until each has left prepare. */
async function start(rt: HostRuntime, queues: FailoverQueues, run: PlanRunRow, group: number, cancelled: () => Promise<boolean>): Promise<Outcome> {
  const { db } = rt.ctx;
  const vms = await listRunVms(db, run.id, group);
  const failed: { vm: string; reason: string }[] = vms.filter((v) => v.error !== null).map((v) => ({ vm: v.vm, reason: v.error! }));
  const requested: RunVmRow[] = [];
  // One at a time: placement reads what each host has free, so concurrent requests could overfill one.
  for (const v of vms) {
    if (v.error !== null || v.pointId === null) continue;
    try {
      await requestFailover(rt.ctx, queues, {
        tenant: run.tenant, vm: v.vm, kind: run.mode, point: String(v.pointId), id: v.failoverId, planRunId: run.id,
        ...(run.mode === 'planned' ? { plannedPointId: Number(v.pointId) } : {}),
        idempotencyKey: `plan-run.${run.id}.${v.vm}`, requestedBy: `plan-run ${run.id} (${run.requestedBy})`,
      });
      requested.push(v);
    } catch (err) {
      failed.push({ vm: v.vm, reason: reasonOf(err) });
      await setRunVm(db, run.id, v.vm, { error: `failover: ${reasonOf(err)}` });
    }
  }
  // Each failover's point is pinned by the failover from its prepare on; the run's own pin can go then.
  const ids = new Set(requested.map((v) => v.failoverId));
  for (;;) {
    if (await cancelled()) return Cancelled;
    const fs = (await listFailovers(db, { planRunId: run.id })).filter((f) => ids.has(f.id));
    if (fs.every((f) => !['requested', 'preparing'].includes(f.state))) {
      for (const f of fs.filter(ended)) {
        failed.push({ vm: f.vm, reason: f.error ?? f.state });
        await setRunVm(db, run.id, f.vm, { error: `failover ${f.id}: ${f.error ?? f.state}` });
      }
      break;
    }
    await sleep(SliceMs);
  }
  for (const v of requested) await unpinPoint(db, Number(v.pointId), holder(run.id));
  if (failed.length > 0) return { status: 'failed', detail: `${failed.length} of ${vms.length} VM(s) failed: ${failedVms(failed)}` };
  return { status: 'done', detail: `${requested.length} failover(s) started` };
}

const ended = (f: FailoverRow) => f.state === 'failed' || f.endedAt !== null;
const isUp = (f: FailoverRow) => f.state === 'ready' || f.state === 'running' || f.state === 'committed';

/** Every VM of the group that was started is ready (or running), within the timeout counted from the step's first start. */
async function waitReady(rt: HostRuntime, run: PlanRunRow, group: number, timeoutSeconds: number, cancelled: () => Promise<boolean>): Promise<Outcome> {
  const { db } = rt.ctx;
  const since = (await stepStartedAt(db, run.id, run.cursor)) ?? new Date();
  const deadline = since.getTime() + timeoutSeconds * 1000;
  const vms = await listRunVms(db, run.id, group);
  const ids = new Set(vms.map((v) => v.failoverId));
  for (;;) {
    if (await cancelled()) return Cancelled;
    const fs = (await listFailovers(db, { planRunId: run.id })).filter((f) => ids.has(f.id));
    const failed = fs.filter((f) => !isUp(f) && ended(f));
    const waiting = fs.filter((f) => !isUp(f) && !ended(f));
    if (waiting.length === 0) {
      for (const f of failed) await setRunVm(db, run.id, f.vm, { error: `failover ${f.id}: ${f.error ?? f.state}` });
      if (failed.length > 0) return { status: 'failed', detail: `${failed.length} VM(s) did not become ready: ${failedVms(failed.map((f) => ({ vm: f.vm, reason: f.error ?? f.state })))}` };
      return { status: 'done', detail: `${fs.length} VM(s) ready` };
    }
    if (Date.now() >= deadline) {
      return { status: 'failed', detail: `${waiting.length} VM(s) not ready within ${timeoutSeconds} s: ${waiting.slice(0, 20).map((f) => `${f.vm} (${f.state})`).join(', ')}${waiting.length > 20 ? ' …' : ''}` };
    }
    await sleep(Math.min(SliceMs, deadline - Date.now()));
  }
}

/** Counted from the step's first start, so a resumed run waits only what was left. */
async function delay(rt: HostRuntime, run: PlanRunRow, seconds: number, cancelled: () => Promise<boolean>): Promise<Outcome> {
  const since = (await stepStartedAt(rt.ctx.db, run.id, run.cursor)) ?? new Date();
  const until = since.getTime() + seconds * 1000;
  while (Date.now() < until) {
    if (await cancelled()) return Cancelled;
    await sleep(Math.min(SliceMs, until - Date.now()));
  }
  return { status: 'done', detail: `waited ${seconds} s` };
}

async function webhook(rt: HostRuntime, run: PlanRunRow, step: Extract<RunStep, { kind: 'webhook' }>, cancelled: () => Promise<boolean>): Promise<Outcome> {
  const secret = await planWebhookSecret(rt.ctx.db, run.tenant, run.plan);
  if (!secret) throw new Error(`plan ${run.plan} no longer exists`);
  const def = run.definition as unknown as PlanDefinition;
  const vms = await listRunVms(rt.ctx.db, run.id, step.group);
  const r = await callWebhook({
    url: step.url, secret, messageId: `msg_${run.id}_${run.cursor}`, timeoutSeconds: step.timeoutSeconds, shouldStop: cancelled,
    publicOnly: !rt.ctx.config.webhooks.allowPrivateTargets,
    body: {
      type: 'plan-run.action', tenant: run.tenant, plan: run.plan, run: run.id, mode: run.mode, step: run.cursor, name: stepName(def, step),
      group: { index: step.group, name: def.groups[step.group]?.name ?? null, when: step.when, vms: vms.map((v) => ({ vm: v.vm, failover: v.failoverId, error: v.error })) },
      timestamp: new Date().toISOString(),
    },
  });
  if (r === 'cancelled') return Cancelled;
  return { status: 'done', detail: `HTTP ${r.status} after ${r.attempts} attempt(s)` };
}

/** Ends the run: its pins released, its state and end time, the final row. */
async function end(rt: HostRuntime, run: PlanRunRow, state: 'completed' | 'failed' | 'cancelled', error: string | null, detail?: string): Promise<void> {
  const { db } = rt.ctx;
  for (const v of await listRunVms(db, run.id)) if (v.pointId !== null) await unpinPoint(db, Number(v.pointId), holder(run.id));
  await db.transaction(async (tx) => {
    await setRun(tx, run.id, { state, endedAt: new Date(), ...(error ? { error } : {}) });
    await record(tx, run, null, state, state === 'failed' ? 'failed' : 'done', detail ?? error);
  });
}

/**
 * A cancel: a planned run's open shutdown commands are cancelled; a test run's VMs are stopped and
 * waited for until torn down. A real run's failovers already started stay (commit or revert each).
 */
async function cancel(rt: HostRuntime, queues: FailoverQueues, run: PlanRunRow, closing: () => boolean): Promise<void> {
  const { db } = rt.ctx;
  if (run.state !== 'cancelling') await setRun(db, run.id, { state: 'cancelling' });
  const vms = await listRunVms(db, run.id);
  if (run.mode === 'planned') for (const v of vms) await cancelFinalCycle(db, { id: v.failoverId, tenant: run.tenant, vm: v.vm }, `plan run ${run.id} was cancelled`);
  let detail = 'no failover was started';
  if (run.mode === 'test') {
    const by = `plan-run ${run.id} cancel`;
    for (const f of await listFailovers(db, { planRunId: run.id, active: true })) {
      if (f.goal === 'stopped' || f.state === 'failed') continue;
      await changeGoal(rt.ctx, queues, undefined, f.id, 'stopped', by).catch((err: unknown) => rt.log.warn({ err, failover: f.id }, 'plan run cancel: stop'));
    }
    const deadline = Date.now() + CancelWaitMs;
    let live = await listFailovers(db, { planRunId: run.id, active: true });
    while (live.length > 0 && Date.now() < deadline) {
      if (closing()) return;
      await sleep(SliceMs);
      live = await listFailovers(db, { planRunId: run.id, active: true });
    }
    detail = live.length > 0 ? `${live.length} test VM(s) still being torn down: ${live.map((f) => f.id).join(', ')}` : 'its test VMs are stopped and cleaned up';
  } else if ((await listFailovers(db, { planRunId: run.id, active: true })).length > 0) {
    detail = 'the failovers it started stay: commit or revert each';
  }
  await end(rt, run, 'cancelled', null, detail);
}
