/**
 * Commands to agents: what the failover engine (and later failback) calls to reach an agent over the
 * agent's own outbound connection (docs/formats/agent-protocol.md §13). A command is addressed to the
 * server the VM replicates from (vms.server_fqdn) and delivered to that agent alone; the agent reports
 * progress and one result. The catalog row is the authority; nothing here needs Redis.
 *
 *   queueCommand(db, { tenant, vm, kind, payload })  → CommandRow (state queued)
 *   getCommand(db, id)                              → CommandRow | undefined
 *   waitForCommand(db, id, timeoutMs)               → CommandRow, finished or as it stands at the timeout
 *   cancelCommand(db, id, reason?)                  → CommandRow | undefined
 *
 * Idempotent for callers that retry (a failover job killed and run again): queueing the same
 * (tenant, vm, kind, payload) again returns the command already queued, running or done, not a new one.
 */
import { randomUUID } from 'node:crypto';
import type { Queryable } from '../catalog/db.js';
import { getVm } from '../catalog/vms.js';
import { ErrNotFoundHere } from '../errors.js';
import type { CommandKind, PlannedFailoverResult } from '../../shared/protocol/schemas.js';
import { plannedFailoverResultSchema } from '../../shared/protocol/schemas.js';
import type { CommandRow } from './catalog.js';
import { OpenStates, cancelOpenCommand, expireCommands, insertCommand, selectCommand } from './catalog.js';
import { wakeAgent } from './wake.js';

export type { CommandRow } from './catalog.js';

/** A command not picked up by its agent within this time fails as expired. */
export const DefaultCommandExpiryMs = 15 * 60_000;
/** How often waitForCommand looks at the row. */
const WaitPollMs = 500;

export interface QueueCommandRequest {
  tenant: string;
  vm: string;
  kind: CommandKind;
  payload: Record<string, unknown>;
  /** Who asks (a failover id, an operator); recorded. */
  requestedBy?: string;
  /** How long the command may wait for its agent to pick it up (default 15 min). */
  expiresInMs?: number;
}

/** Queues a command for the agent of the server the VM replicates from; wakes its long-poll. */
export async function queueCommand(db: Queryable, req: QueueCommandRequest): Promise<CommandRow> {
  const vm = await getVm(db, req.tenant, req.vm);
  if (!vm) throw ErrNotFoundHere(`tenant ${req.tenant} has no VM ${req.vm}`);
  const same = await db.query<{ id: string }>(`SELECT id FROM agent_commands WHERE tenant = $1 AND vm = $2 AND kind = $3 AND payload = $4::jsonb
    AND state NOT IN ('failed', 'cancelled') ORDER BY created_at DESC LIMIT 1`, [req.tenant, req.vm, req.kind, JSON.stringify(req.payload)]);
  if (same[0]) return (await getCommand(db, same[0].id))!;
  const row = await insertCommand(db, {
    id: newCommandId(), tenant: req.tenant, serverFqdn: vm.serverFqdn, vm: req.vm, kind: req.kind, payload: req.payload,
    requestedBy: req.requestedBy ?? '', expiresAt: new Date(Date.now() + (req.expiresInMs ?? DefaultCommandExpiryMs)),
  });
  wakeAgent(row.tenant, row.serverFqdn);
  return row;
}

/** The command as it stands (a queued one past its expiry reads as failed: expired). */
export async function getCommand(db: Queryable, id: string): Promise<CommandRow | undefined> {
  const row = await selectCommand(db, id);
  if (row && row.state === 'queued' && row.expiresAt.getTime() <= Date.now()) {
    await expireCommands(db);
    return selectCommand(db, id);
  }
  return row;
}

/** Whether the command has ended (done, failed, cancelled). */
export function isFinished(row: Pick<CommandRow, 'state'>): boolean {
  return !OpenStates.includes(row.state);
}

/**
 * Waits until the command has ended or timeoutMs passed; returns the row as it then stands. Call it
 * in slices from a job that must notice a stop asked meanwhile.
 */
export async function waitForCommand(db: Queryable, id: string, timeoutMs: number): Promise<CommandRow> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const row = await getCommand(db, id);
    if (!row) throw ErrNotFoundHere(`no command ${id}`);
    if (isFinished(row) || Date.now() >= deadline) return row;
    await new Promise((r) => setTimeout(r, Math.min(WaitPollMs, Math.max(0, deadline - Date.now()))));
  }
}

/**
 * Cancels a command that has not ended: a queued one is never delivered; a delivered or running one
 * is told at its next progress report and stops before its next step (what it already did stays
 * done: a VM already shut down stays off). Returns the row after; a finished command is unchanged.
 */
export async function cancelCommand(db: Queryable, id: string, reason = 'cancelled'): Promise<CommandRow | undefined> {
  const row = await cancelOpenCommand(db, id, reason);
  if (row) wakeAgent(row.tenant, row.serverFqdn);
  return row;
}

/** The result of a done planned-failover command: its final cycle and capture time. */
export function plannedFailoverResult(row: CommandRow): PlannedFailoverResult | undefined {
  if (row.kind !== 'planned-failover' || row.state !== 'done') return undefined;
  const r = plannedFailoverResultSchema.safeParse(row.result);
  return r.success ? r.data : undefined;
}

/** cmd-<ms base36>-<random>: short, sortable by time, an agent id (protocol §1). */
export function newCommandId(): string {
  return `cmd-${Date.now().toString(36)}-${randomUUID().slice(0, 8)}`;
}
