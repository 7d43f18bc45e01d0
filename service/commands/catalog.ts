/**
 * The agent_commands table (migration 005): commands queued for one server of one tenant, delivered
 * over that agent's long-poll, finished by its result. Every function takes the tenant and server
 * of the asking agent where an agent asks, so a command of another tenant or server is never seen.
 */
import type { Queryable } from '../catalog/db.js';
import type { CommandKind, CommandState } from '../../shared/protocol/schemas.js';

export interface CommandProgress {
  step: string;
  detail: string | null;
  at: string;
}

export interface CommandRow {
  id: string;
  tenant: string;
  serverFqdn: string;
  vm: string;
  kind: CommandKind;
  payload: Record<string, unknown>;
  state: CommandState;
  result: Record<string, unknown> | null;
  error: string | null;
  progress: CommandProgress[];
  deliveredTo: string | null;
  deliveries: number;
  requestedBy: string;
  createdAt: Date;
  deliveredAt: Date | null;
  finishedAt: Date | null;
  expiresAt: Date;
}

/** States in which a command is not finished. */
export const OpenStates: readonly CommandState[] = ['queued', 'delivered', 'running'];

const cols = `id, tenant, server_fqdn AS "serverFqdn", vm, kind, payload, state, result, error, progress, delivered_to AS "deliveredTo",
  deliveries, requested_by AS "requestedBy", created_at AS "createdAt", delivered_at AS "deliveredAt", finished_at AS "finishedAt", expires_at AS "expiresAt"`;

export async function insertCommand(db: Queryable, c: Pick<CommandRow, 'id' | 'tenant' | 'serverFqdn' | 'vm' | 'kind' | 'payload' | 'requestedBy' | 'expiresAt'>): Promise<CommandRow> {
  const rows = await db.query<CommandRow>(`INSERT INTO agent_commands (id, tenant, server_fqdn, vm, kind, payload, requested_by, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ${cols}`, [c.id, c.tenant, c.serverFqdn, c.vm, c.kind, JSON.stringify(c.payload), c.requestedBy, c.expiresAt]);
  return rows[0]!;
}

export async function selectCommand(db: Queryable, id: string): Promise<CommandRow | undefined> {
  return (await db.query<CommandRow>(`SELECT ${cols} FROM agent_commands WHERE id = $1`, [id]))[0];
}

/** The agent's own command; undefined for one of another tenant or server, as for none. */
export async function selectAgentCommand(db: Queryable, tenant: string, fqdn: string, id: string): Promise<CommandRow | undefined> {
  return (await db.query<CommandRow>(`SELECT ${cols} FROM agent_commands WHERE id = $1 AND tenant = $2 AND server_fqdn = $3`, [id, tenant, fqdn]))[0];
}

/** The newest command of a VM of a kind (for a failover that follows its command). */
export async function latestCommandOf(db: Queryable, tenant: string, vm: string, kind: CommandKind): Promise<CommandRow | undefined> {
  return (await db.query<CommandRow>(`SELECT ${cols} FROM agent_commands WHERE tenant = $1 AND vm = $2 AND kind = $3 ORDER BY created_at DESC, id DESC LIMIT 1`, [tenant, vm, kind]))[0];
}

/** Queued commands past their expiry fail as expired (never delivered). */
export async function expireCommands(db: Queryable): Promise<void> {
  await db.query(`UPDATE agent_commands SET state = 'failed', error = 'expired: the agent did not pick the command up before ' || to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), finished_at = now()
    WHERE state = 'queued' AND expires_at <= now()`);
}

/**
 * Takes the agent's deliverable commands and marks them delivered to this instance: every queued one,
 * and every delivered or running one last delivered to another instance (the agent restarted before
 * it finished). A running command stays running. Oldest first.
 */
export async function deliverCommands(db: Queryable, tenant: string, fqdn: string, instance: string): Promise<CommandRow[]> {
  return db.query<CommandRow>(`UPDATE agent_commands SET state = CASE WHEN state = 'queued' THEN 'delivered' ELSE state END,
      delivered_to = $3, deliveries = deliveries + 1, delivered_at = now()
    WHERE tenant = $1 AND server_fqdn = $2
      AND ((state = 'queued' AND expires_at > now()) OR (state IN ('delivered', 'running') AND delivered_to IS DISTINCT FROM $3))
    RETURNING ${cols}`, [tenant, fqdn, instance]).then((rows) => rows.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || a.id.localeCompare(b.id)));
}

/** Appends a progress step; a delivered command becomes running. Returns the state after. */
export async function addProgress(db: Queryable, id: string, step: string, detail: string | null): Promise<CommandState | undefined> {
  const entry = JSON.stringify([{ step, detail, at: new Date().toISOString() }]);
  const rows = await db.query<{ state: CommandState }>(`UPDATE agent_commands SET progress = progress || $2::jsonb,
      state = CASE WHEN state IN ('queued', 'delivered') THEN 'running' ELSE state END
    WHERE id = $1 AND state IN ('queued', 'delivered', 'running') RETURNING state`, [id, entry]);
  if (rows[0]) return rows[0].state;
  return (await db.query<{ state: CommandState }>('SELECT state FROM agent_commands WHERE id = $1', [id]))[0]?.state;
}

/** Records the result of an open command (the first result wins). Returns the state after. */
export async function finishCommand(db: Queryable, id: string, outcome: { ok: true; result: Record<string, unknown> } | { ok: false; error: string }): Promise<CommandState | undefined> {
  const rows = await db.query<{ state: CommandState }>(`UPDATE agent_commands SET state = $2, result = $3, error = $4, finished_at = now()
    WHERE id = $1 AND state IN ('queued', 'delivered', 'running') RETURNING state`,
  [id, outcome.ok ? 'done' : 'failed', outcome.ok ? JSON.stringify(outcome.result) : null, outcome.ok ? null : outcome.error]);
  if (rows[0]) return rows[0].state;
  return (await db.query<{ state: CommandState }>('SELECT state FROM agent_commands WHERE id = $1', [id]))[0]?.state;
}

/** Cancels an open command; returns the row after (unchanged when it had finished). */
export async function cancelOpenCommand(db: Queryable, id: string, reason: string): Promise<CommandRow | undefined> {
  const rows = await db.query<CommandRow>(`UPDATE agent_commands SET state = 'cancelled', error = $2, finished_at = now()
    WHERE id = $1 AND state IN ('queued', 'delivered', 'running') RETURNING ${cols}`, [id, reason]);
  return rows[0] ?? selectCommand(db, id);
}
