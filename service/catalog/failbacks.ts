/**
 * Failbacks in the catalog (migration 019, docs/failback.md): one row per request, its state (the
 * step the job does next or is doing), its step log and its report. The row is the authority: the
 * failback job reads it before every step and a killed worker resumes at the state it names.
 */
import type { Queryable } from './db.js';

export const FailbackStates = ['requested', 'stopping', 'final-cycle', 'confirming', 'starting', 'removing', 'adopting', 'resuming', 'done', 'failed'] as const;
export type FailbackState = (typeof FailbackStates)[number];

export interface FailbackStep {
  step: string;
  status: 'started' | 'done' | 'failed';
  at: string;
  detail: string | null;
}

export interface FailbackRow {
  id: string;
  tenant: string;
  vm: string;
  failoverId: string;
  host: string | null;
  state: FailbackState;
  shutdownTimeoutSeconds: number;
  steps: FailbackStep[];
  report: Record<string, unknown>;
  error: string | null;
  requestedBy: string;
  requestedAt: Date;
  endedAt: Date | null;
  updatedAt: Date;
}

const cols = `id, tenant, vm, failover_id AS "failoverId", host, state, shutdown_timeout_seconds AS "shutdownTimeoutSeconds", steps, report, error,
  requested_by AS "requestedBy", requested_at AS "requestedAt", ended_at AS "endedAt", updated_at AS "updatedAt"`;

export async function insertFailback(db: Queryable, f: Pick<FailbackRow, 'id' | 'tenant' | 'vm' | 'failoverId' | 'host' | 'shutdownTimeoutSeconds' | 'requestedBy'>): Promise<FailbackRow> {
  return (await db.query<FailbackRow>(`INSERT INTO failbacks (id, tenant, vm, failover_id, host, state, shutdown_timeout_seconds, requested_by)
    VALUES ($1, $2, $3, $4, $5, 'requested', $6, $7) RETURNING ${cols}`, [f.id, f.tenant, f.vm, f.failoverId, f.host, f.shutdownTimeoutSeconds, f.requestedBy]))[0]!;
}

export async function getFailback(db: Queryable, id: string): Promise<FailbackRow | undefined> {
  return (await db.query<FailbackRow>(`SELECT ${cols} FROM failbacks WHERE id = $1`, [id]))[0];
}

/** The newest failback of a failover (the live one, else the last that ended). */
export async function latestFailbackOf(db: Queryable, failoverId: string): Promise<FailbackRow | undefined> {
  return (await db.query<FailbackRow>(`SELECT ${cols} FROM failbacks WHERE failover_id = $1 ORDER BY requested_at DESC, id DESC LIMIT 1`, [failoverId]))[0];
}

export async function listLiveFailbacks(db: Queryable, host: string): Promise<FailbackRow[]> {
  return db.query<FailbackRow>(`SELECT ${cols} FROM failbacks WHERE host = $1 AND ended_at IS NULL ORDER BY requested_at, id`, [host]);
}

/** Appends a step to the log (and, when given, moves the state and merges into the report) in one statement. */
export async function recordFailbackStep(db: Queryable, id: string, step: Omit<FailbackStep, 'at'>, change: { state?: FailbackState; report?: Record<string, unknown>; error?: string; ended?: boolean } = {}): Promise<void> {
  const entry = JSON.stringify([{ ...step, at: new Date().toISOString() }]);
  await db.query(`UPDATE failbacks SET steps = steps || $2::jsonb, state = coalesce($3, state), report = report || $4::jsonb,
      error = coalesce($5, error), ended_at = CASE WHEN $6 THEN now() ELSE ended_at END, updated_at = now() WHERE id = $1`,
  [id, entry, change.state ?? null, JSON.stringify(change.report ?? {}), change.error ?? null, change.ended === true]);
}
