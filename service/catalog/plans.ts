/**
 * Recovery plans, their runs, each run's steps and VMs (migration 010). The run's row is the
 * authority: its job (service/plans/job.ts) reads it before every step, writes a step's row before
 * the step's side effect and moves the cursor in the same transaction as the step's end.
 */
import type { Queryable } from './db.js';

export interface PlanRow {
  tenant: string;
  name: string;
  definition: Record<string, unknown>;
  createdBy: string;
  createdAt: Date;
  updatedAt: Date;
}

const planCols = 'tenant, name, definition, created_by AS "createdBy", created_at AS "createdAt", updated_at AS "updatedAt"';

export async function insertPlan(db: Queryable, p: Pick<PlanRow, 'tenant' | 'name' | 'definition' | 'createdBy'> & { webhookSecret: string }): Promise<PlanRow> {
  return (await db.query<PlanRow>(`INSERT INTO plans (tenant, name, definition, webhook_secret, created_by) VALUES ($1, $2, $3, $4, $5) RETURNING ${planCols}`,
    [p.tenant, p.name, JSON.stringify(p.definition), p.webhookSecret, p.createdBy]))[0]!;
}

export async function updatePlan(db: Queryable, tenant: string, name: string, definition: Record<string, unknown>): Promise<PlanRow | undefined> {
  return (await db.query<PlanRow>(`UPDATE plans SET definition = $3, updated_at = now() WHERE tenant = $1 AND name = $2 RETURNING ${planCols}`, [tenant, name, JSON.stringify(definition)]))[0];
}

export async function getPlan(db: Queryable, tenant: string, name: string): Promise<PlanRow | undefined> {
  return (await db.query<PlanRow>(`SELECT ${planCols} FROM plans WHERE tenant = $1 AND name = $2`, [tenant, name]))[0];
}

export async function planWebhookSecret(db: Queryable, tenant: string, name: string): Promise<string | undefined> {
  return (await db.query<{ s: string }>('SELECT webhook_secret AS s FROM plans WHERE tenant = $1 AND name = $2', [tenant, name]))[0]?.s;
}

export async function listPlans(db: Queryable, tenant: string): Promise<PlanRow[]> {
  return db.query<PlanRow>(`SELECT ${planCols} FROM plans WHERE tenant = $1 ORDER BY name`, [tenant]);
}

/** Deletes a plan and its ended runs; false when it has none. A plan with a live run is kept (the caller refuses). */
export async function deletePlan(db: Queryable, tenant: string, name: string): Promise<boolean> {
  return (await db.query('DELETE FROM plans WHERE tenant = $1 AND name = $2 RETURNING name', [tenant, name])).length > 0;
}

// ---- runs ----

export type RunState = 'requested' | 'running' | 'waiting' | 'cancelling' | 'completed' | 'failed' | 'cancelled';
export type RunGoal = 'completed' | 'cancelled';

export interface PlanRunRow {
  id: string;
  tenant: string;
  plan: string;
  mode: 'test' | 'planned' | 'unplanned';
  definition: Record<string, unknown>;
  steps: unknown[];
  state: RunState;
  goal: RunGoal;
  cursor: number;
  host: string;
  error: string | null;
  requestedBy: string;
  requestedAt: Date;
  startedAt: Date | null;
  endedAt: Date | null;
  updatedAt: Date;
}

const runCols = `id, tenant, plan, mode, definition, steps, state, goal, cursor, host, error, requested_by AS "requestedBy",
  requested_at AS "requestedAt", started_at AS "startedAt", ended_at AS "endedAt", updated_at AS "updatedAt"`;

export async function insertRun(db: Queryable, r: Pick<PlanRunRow, 'id' | 'tenant' | 'plan' | 'mode' | 'definition' | 'steps' | 'host' | 'requestedBy'>): Promise<PlanRunRow> {
  return (await db.query<PlanRunRow>(`INSERT INTO plan_runs (id, tenant, plan, mode, definition, steps, state, host, requested_by)
    VALUES ($1, $2, $3, $4, $5, $6, 'requested', $7, $8) RETURNING ${runCols}`,
  [r.id, r.tenant, r.plan, r.mode, JSON.stringify(r.definition), JSON.stringify(r.steps), r.host, r.requestedBy]))[0]!;
}

export async function getRun(db: Queryable, id: string, forUpdate = false): Promise<PlanRunRow | undefined> {
  return (await db.query<PlanRunRow>(`SELECT ${runCols} FROM plan_runs WHERE id = $1${forUpdate ? ' FOR UPDATE' : ''}`, [id]))[0];
}

export async function listRuns(db: Queryable, filter: { tenant?: string; plan?: string; host?: string; live?: boolean }): Promise<PlanRunRow[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  for (const [k, col] of [['tenant', 'tenant'], ['plan', 'plan'], ['host', 'host']] as const) {
    if (filter[k] !== undefined) {
      params.push(filter[k]);
      where.push(`${col} = $${params.length}`);
    }
  }
  if (filter.live) where.push('ended_at IS NULL');
  return db.query<PlanRunRow>(`SELECT ${runCols} FROM plan_runs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY requested_at, id`, params);
}

export async function setRun(db: Queryable, id: string, set: Partial<Pick<PlanRunRow, 'state' | 'goal' | 'cursor' | 'error' | 'startedAt' | 'endedAt'>>): Promise<void> {
  const col: Record<string, string> = { state: 'state', goal: 'goal', cursor: 'cursor', error: 'error', startedAt: 'started_at', endedAt: 'ended_at' };
  const sets = ['updated_at = now()'];
  const params: unknown[] = [id];
  for (const [k, v] of Object.entries(set)) {
    params.push(v);
    sets.push(`${col[k]} = $${params.length}`);
  }
  await db.query(`UPDATE plan_runs SET ${sets.join(', ')} WHERE id = $1`, params);
}

/**
 * Moves the live runs of failover hosts silent for longer than staleMs (or no longer registered) to
 * host, each run once (rows another host is taking are skipped); the runs taken, with the host each
 * came from and its last heartbeat.
 */
export async function takeStrandedRuns(db: Queryable, host: string, staleMs: number): Promise<Array<Pick<PlanRunRow, 'id' | 'tenant' | 'plan' | 'mode'> & { from: string; heartbeatAt: Date | null }>> {
  return db.query(
    `WITH stranded AS (
       SELECT r.id, r.host AS from_host, h.heartbeat_at FROM plan_runs r LEFT JOIN failover_hosts h ON h.name = r.host
       WHERE r.ended_at IS NULL AND r.host <> $1 AND (h.name IS NULL OR h.heartbeat_at < now() - make_interval(secs => $2::float8 / 1000))
       FOR UPDATE OF r SKIP LOCKED)
     UPDATE plan_runs p SET host = $1, updated_at = now() FROM stranded s WHERE p.id = s.id
     RETURNING p.id, p.tenant, p.plan, p.mode, s.from_host AS "from", s.heartbeat_at AS "heartbeatAt"`,
    [host, staleMs]);
}

// ---- steps ----

export interface RunStepRow {
  id: number;
  stepIndex: number | null;
  step: string;
  status: 'started' | 'done' | 'failed' | 'skipped' | 'waiting';
  detail: string | null;
  cause: string | null;
  at: Date;
}

export async function addRunStep(db: Queryable, runId: string, stepIndex: number | null, step: string, status: RunStepRow['status'], detail?: string, cause?: string): Promise<void> {
  await db.query('INSERT INTO plan_run_steps (run_id, step_index, step, status, detail, cause) VALUES ($1, $2, $3, $4, $5, $6)', [runId, stepIndex, step, status, detail ?? null, cause ?? null]);
}

export async function listRunSteps(db: Queryable, runId: string): Promise<RunStepRow[]> {
  return db.query<RunStepRow>('SELECT id, step_index AS "stepIndex", step, status, detail, cause, at FROM plan_run_steps WHERE run_id = $1 ORDER BY id', [runId]);
}

/** When the step at this index was first started in this run (a resumed delay counts from it). */
export async function stepStartedAt(db: Queryable, runId: string, stepIndex: number): Promise<Date | undefined> {
  return (await db.query<{ at: Date }>(`SELECT at FROM plan_run_steps WHERE run_id = $1 AND step_index = $2 AND status = 'started' ORDER BY id LIMIT 1`, [runId, stepIndex]))[0]?.at;
}

// ---- the run's VMs ----

export interface RunVmRow {
  vm: string;
  groupIndex: number;
  failoverId: string;
  finalCycle: number | null;
  pointId: number | null;
  cycle: number | null;
  capturedAt: Date | null;
  error: string | null;
}

const vmCols = 'vm, group_index AS "groupIndex", failover_id AS "failoverId", final_cycle AS "finalCycle", point_id AS "pointId", cycle, captured_at AS "capturedAt", error';

export async function insertRunVms(db: Queryable, runId: string, vms: Pick<RunVmRow, 'vm' | 'groupIndex' | 'failoverId'>[]): Promise<void> {
  if (vms.length === 0) return;
  await db.query(`INSERT INTO plan_run_vms (run_id, vm, group_index, failover_id) SELECT $1, * FROM unnest($2::text[], $3::int[], $4::text[])`,
    [runId, vms.map((v) => v.vm), vms.map((v) => v.groupIndex), vms.map((v) => v.failoverId)]);
}

export async function listRunVms(db: Queryable, runId: string, group?: number): Promise<RunVmRow[]> {
  return group === undefined
    ? db.query<RunVmRow>(`SELECT ${vmCols} FROM plan_run_vms WHERE run_id = $1 ORDER BY group_index, vm`, [runId])
    : db.query<RunVmRow>(`SELECT ${vmCols} FROM plan_run_vms WHERE run_id = $1 AND group_index = $2 ORDER BY vm`, [runId, group]);
}

export async function setRunVm(db: Queryable, runId: string, vm: string, set: Partial<Pick<RunVmRow, 'finalCycle' | 'pointId' | 'cycle' | 'capturedAt' | 'error'>>): Promise<void> {
  const col: Record<string, string> = { finalCycle: 'final_cycle', pointId: 'point_id', cycle: 'cycle', capturedAt: 'captured_at', error: 'error' };
  const sets: string[] = [];
  const params: unknown[] = [runId, vm];
  for (const [k, v] of Object.entries(set)) {
    params.push(v);
    sets.push(`${col[k]} = $${params.length}`);
  }
  if (sets.length > 0) await db.query(`UPDATE plan_run_vms SET ${sets.join(', ')} WHERE run_id = $1 AND vm = $2`, params);
}
