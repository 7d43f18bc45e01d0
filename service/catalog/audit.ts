/**
 * The audit log (migration 009): one row per mutation through the API. Rows are only ever inserted;
 * a trigger refuses UPDATE, DELETE and TRUNCATE on the table.
 */
import type { Queryable } from './db.js';

export interface AuditInput {
  actor: string;
  actorKey: string | null;
  actorRole: string;
  actorTenant: string | null;
  tenant: string | null;
  action: string;
  target: string;
  source: string | null;
  requestId: string | null;
  /** ok, or the error's code when the change did not happen. */
  result: string;
}

export interface AuditRow extends AuditInput {
  id: number;
  at: Date;
}

const cols = `id, at, actor, actor_key AS "actorKey", actor_role AS "actorRole", actor_tenant AS "actorTenant", tenant, action, target, source,
  request_id AS "requestId", result`;

export async function insertAudit(db: Queryable, a: AuditInput): Promise<void> {
  await db.query(
    'INSERT INTO audit_log (actor, actor_key, actor_role, actor_tenant, tenant, action, target, source, request_id, result) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)',
    [a.actor, a.actorKey, a.actorRole, a.actorTenant, a.tenant, a.action, a.target, a.source, a.requestId, a.result]);
}

export interface AuditQuery {
  tenant?: string | undefined;
  actor?: string | undefined;
  from?: Date | undefined;
  to?: Date | undefined;
  /** Rows with an id below this one (the cursor: newest first). */
  before?: number | undefined;
  limit: number;
}

/** Rows matching q, newest first, at most q.limit. */
export async function listAudit(db: Queryable, q: AuditQuery): Promise<AuditRow[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  const add = (sql: string, v: unknown) => {
    params.push(v);
    where.push(sql.replace('?', `$${params.length}`));
  };
  if (q.tenant !== undefined) add('tenant = ?', q.tenant);
  if (q.actor !== undefined) add('actor = ?', q.actor);
  if (q.from !== undefined) add('at >= ?', q.from);
  if (q.to !== undefined) add('at < ?', q.to);
  if (q.before !== undefined) add('id < ?', q.before);
  params.push(q.limit);
  return db.query<AuditRow>(`SELECT ${cols} FROM audit_log ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT $${params.length}`, params);
}
