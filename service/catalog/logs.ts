/** Committed logs and base chunks: one row per object an agent committed, with its merge status. */
import type { Queryable } from './db.js';

export type LogKind = 'log' | 'chunk';
export type LogStatus = 'pending' | 'applied' | 'rejected' | 'skipped';

export interface LogRow {
  tenant: string;
  vm: string;
  disk: string;
  kind: LogKind;
  generation: number;
  sequence: number;
  key: string;
  size: number;
  sha256: string;
  consistency: string;
  createdAt: Date;
  committedAt: Date;
  status: LogStatus;
  /** The VM cycle the log belongs to (null: a version-1 log, its own cycle; a base chunk). */
  cycle: number | null;
  /** The agent's capture time of that cycle. */
  capturedAt: Date | null;
}

const cols = `tenant, vm, disk, kind, generation, sequence, key, size, sha256, consistency, created_at AS "createdAt", committed_at AS "committedAt", status,
  cycle, captured_at AS "capturedAt"`;

/** The columns of a LogRow, for queries elsewhere (base chunks). */
export const logColumns = cols;

/** Inserts a commit; returns the existing row instead when (kind, generation, sequence) is taken. */
export async function insertLog(db: Queryable, l: Omit<LogRow, 'committedAt' | 'status' | 'cycle' | 'capturedAt'> & Partial<Pick<LogRow, 'cycle' | 'capturedAt'>>): Promise<{ inserted: boolean; row: LogRow }> {
  const ins = await db.query<LogRow>(`INSERT INTO logs (tenant, vm, disk, kind, generation, sequence, key, size, sha256, consistency, created_at, cycle, captured_at)
    VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) ON CONFLICT DO NOTHING RETURNING ${cols}`,
  [l.tenant, l.vm, l.disk, l.kind, l.generation, l.sequence, l.key, l.size, l.sha256, l.consistency, l.createdAt, l.cycle ?? null, l.capturedAt ?? null]);
  if (ins.length > 0) return { inserted: true, row: ins[0]! };
  const rows = await db.query<LogRow>(`SELECT ${cols} FROM logs WHERE tenant = $1 AND vm = $2 AND disk = $3 AND kind = $4 AND generation = $5 AND sequence = $6`,
    [l.tenant, l.vm, l.disk, l.kind, l.generation, l.sequence]);
  return { inserted: false, row: rows[0]! };
}

/** Pending rows of one disk, generation, kind, in sequence order. */
export async function pendingLogs(db: Queryable, tenant: string, vm: string, disk: string, kind: LogKind, generation: number): Promise<LogRow[]> {
  return db.query<LogRow>(`SELECT ${cols} FROM logs WHERE tenant = $1 AND vm = $2 AND disk = $3 AND kind = $4 AND generation = $5 AND status = 'pending' ORDER BY sequence`,
    [tenant, vm, disk, kind, generation]);
}

export async function getLog(db: Queryable, tenant: string, vm: string, disk: string, kind: LogKind, generation: number, sequence: number): Promise<LogRow | undefined> {
  return (await db.query<LogRow>(`SELECT ${cols} FROM logs WHERE tenant = $1 AND vm = $2 AND disk = $3 AND kind = $4 AND generation = $5 AND sequence = $6`,
    [tenant, vm, disk, kind, generation, sequence]))[0];
}

export async function setLogStatus(db: Queryable, l: Pick<LogRow, 'tenant' | 'vm' | 'disk' | 'kind' | 'generation' | 'sequence'>, status: LogStatus, error: string | null = null): Promise<void> {
  await db.query(`UPDATE logs SET status = $7, error = $8, applied_at = CASE WHEN $7 = 'applied' THEN now() ELSE applied_at END
    WHERE tenant = $1 AND vm = $2 AND disk = $3 AND kind = $4 AND generation = $5 AND sequence = $6`,
  [l.tenant, l.vm, l.disk, l.kind, l.generation, l.sequence, status, error]);
}

/** Pending logs and bytes per disk of a VM. */
export async function pendingByDisk(db: Queryable, tenant: string, vm: string): Promise<Map<string, { logs: number; bytes: number }>> {
  const rows = await db.query<{ disk: string; logs: number; bytes: number }>(
    `SELECT disk, count(*)::int8 AS logs, COALESCE(sum(size), 0)::int8 AS bytes FROM logs WHERE tenant = $1 AND vm = $2 AND kind = 'log' AND status = 'pending' GROUP BY disk`, [tenant, vm]);
  return new Map(rows.map((r) => [r.disk, { logs: r.logs, bytes: r.bytes }]));
}

/** Marks the logs first..last of one disk and generation applied, in one statement (a merge batch). */
export async function markLogsApplied(db: Queryable, l: Pick<LogRow, 'tenant' | 'vm' | 'disk' | 'generation'>, first: number, last: number): Promise<void> {
  await db.query(`UPDATE logs SET status = 'applied', error = NULL, applied_at = now()
    WHERE tenant = $1 AND vm = $2 AND disk = $3 AND kind = 'log' AND generation = $4 AND sequence BETWEEN $5 AND $6 AND status = 'pending'`,
  [l.tenant, l.vm, l.disk, l.generation, first, last]);
}
