/**
 * The planned-failover command as the failover job uses it: one command per failover (payload
 * `{ failover: <id> }`), queued idempotently, waited for in slices so the job notices a stop or revert
 * asked meanwhile.
 *
 *   awaitFinalCycle(db, failover, sliceMs) → the final cycle { cycle, capturedAt, consistency, shutdown }
 *     once the agent reported it; undefined while the command is still queued or running;
 *     throws (LifeboatError 'conflict') when the agent failed it, it expired or it was cancelled.
 *   cancelFinalCycle(db, failover, reason) → cancels the failover's command if it is still open.
 */
import { LifeboatError } from '../../shared/errors.js';
import type { PlannedFailoverResult } from '../../shared/protocol/schemas.js';
import type { Queryable } from '../catalog/db.js';
import type { CommandRow } from './catalog.js';
import { cancelCommand, getCommand, isFinished, plannedFailoverResult, queueCommand, waitForCommand } from './commands.js';

export interface FailoverRef {
  id: string;
  tenant: string;
  vm: string;
}

/** The failover's planned-failover command, in whatever state; queued when it has none yet (one per failover). */
export async function finalCycleCommand(db: Queryable, f: FailoverRef): Promise<CommandRow> {
  const rows = await db.query<{ id: string }>(`SELECT id FROM agent_commands WHERE tenant = $1 AND vm = $2 AND kind = 'planned-failover'
    AND payload = $3::jsonb ORDER BY created_at DESC, id DESC LIMIT 1`, [f.tenant, f.vm, JSON.stringify({ failover: f.id })]);
  const existing = rows[0] ? await getCommand(db, rows[0].id) : undefined;
  return existing ?? queueCommand(db, { tenant: f.tenant, vm: f.vm, kind: 'planned-failover', payload: { failover: f.id }, requestedBy: `failover ${f.id}` });
}

export async function awaitFinalCycle(db: Queryable, f: FailoverRef, sliceMs: number): Promise<PlannedFailoverResult | undefined> {
  const queued = await finalCycleCommand(db, f);
  const row = await waitForCommand(db, queued.id, sliceMs);
  if (!isFinished(row)) return undefined;
  const result = plannedFailoverResult(row);
  if (result) return result;
  const why = row.state === 'done' ? `the agent's result does not name a final cycle (${JSON.stringify(row.result).slice(0, 200)})` : row.error ?? row.state;
  throw new LifeboatError('conflict', `the agent of ${row.serverFqdn} did not ship the final cycle of ${f.vm} (command ${row.id} ${row.state}): ${why}`);
}

/** Cancels the failover's command when it has not ended (a stop or revert asked before the final cycle). */
export async function cancelFinalCycle(db: Queryable, f: FailoverRef, reason: string): Promise<void> {
  const rows = await db.query<{ id: string }>(`SELECT id FROM agent_commands WHERE tenant = $1 AND vm = $2 AND kind = 'planned-failover'
    AND payload = $3::jsonb AND state IN ('queued', 'delivered', 'running')`, [f.tenant, f.vm, JSON.stringify({ failover: f.id })]);
  for (const r of rows) await cancelCommand(db, r.id, reason);
}
