/**
 * Usage events (migration 012): what happened, per tenant, with its timestamp. Triggers write every
 * kind but replica_bytes, which the replica storage sampler records (service/usage/sampler.ts).
 * Read for the meter: the intervals open at a time, and the events of a time range.
 */
import type { Queryable } from './db.js';

export type UsageEventKind = 'vm_protected' | 'vm_unprotected' | 'bytes_received' | 'failover_started' | 'failover_ended'
  | 'public_ip_applied' | 'public_ip_removed' | 'plan_run_started' | 'replica_bytes';

export interface UsageEvent {
  id: number;
  tenant: string;
  kind: UsageEventKind;
  subject: string;
  at: Date;
  bytes: number | null;
  data: Record<string, unknown>;
}

const cols = 'id, tenant, kind, subject, at, bytes, data';

/** The kinds that open an interval, and each one's closing kind. */
export const IntervalKinds = { vm_protected: 'vm_unprotected', failover_started: 'failover_ended', public_ip_applied: 'public_ip_removed' } as const;

/**
 * The events of [from, to) in order (at, id), preceded by what is open at `from`: per subject the
 * last interval event before `from` when it opens one, and each tenant's last replica sample before
 * `from`. The meter needs nothing older.
 */
export async function usageEvents(db: Queryable, range: { from: Date; to: Date; tenant?: string | undefined }): Promise<UsageEvent[]> {
  const only = range.tenant === undefined ? [] : [range.tenant];
  const t = (n: number) => (range.tenant === undefined ? '' : ` AND tenant = $${n}`);
  const open = await db.query<UsageEvent>(`SELECT ${cols} FROM (
      SELECT DISTINCT ON (tenant, subject, grp) ${cols} FROM (
        SELECT ${cols}, CASE WHEN kind IN ('vm_protected', 'vm_unprotected') THEN 'vm' WHEN kind IN ('failover_started', 'failover_ended') THEN 'failover' ELSE 'ip' END AS grp
        FROM usage_events WHERE at < $1 AND kind IN ('vm_protected', 'vm_unprotected', 'failover_started', 'failover_ended', 'public_ip_applied', 'public_ip_removed')${t(2)}) e
      ORDER BY tenant, subject, grp, at DESC, id DESC) last
    WHERE kind IN ('vm_protected', 'failover_started', 'public_ip_applied')`, [range.from, ...only]);
  const samples = await db.query<UsageEvent>(`SELECT DISTINCT ON (tenant) ${cols} FROM usage_events
    WHERE kind = 'replica_bytes' AND at < $1${t(2)} ORDER BY tenant, at DESC, id DESC`, [range.from, ...only]);
  const inRange = await db.query<UsageEvent>(`SELECT ${cols} FROM usage_events WHERE at >= $1 AND at < $2${t(3)} ORDER BY at, id`, [range.from, range.to, ...only]);
  const before = [...open, ...samples].sort((a, b) => new Date(a.at).getTime() - new Date(b.at).getTime() || a.id - b.id);
  return [...before, ...inRange].map((e) => ({ ...e, at: new Date(e.at), bytes: e.bytes === null ? null : Number(e.bytes), id: Number(e.id) }));
}

/** Records a sample of a tenant's allocated replica storage. */
export async function recordReplicaBytes(db: Queryable, tenant: string, at: Date, bytes: number): Promise<void> {
  await db.query(`INSERT INTO usage_events (tenant, kind, subject, at, bytes) VALUES ($1, 'replica_bytes', '', $2, $3)`, [tenant, at, bytes]);
}

/** The latest replica storage sample of each tenant (the quota check and status read it). */
export async function latestReplicaBytes(db: Queryable, tenant?: string): Promise<Map<string, { bytes: number; at: Date }>> {
  const rows = await db.query<{ tenant: string; bytes: number; at: Date }>(`SELECT DISTINCT ON (tenant) tenant, bytes, at FROM usage_events
    WHERE kind = 'replica_bytes'${tenant === undefined ? '' : ' AND tenant = $1'} ORDER BY tenant, at DESC, id DESC`, tenant === undefined ? [] : [tenant]);
  return new Map(rows.map((r) => [r.tenant, { bytes: Number(r.bytes), at: new Date(r.at) }]));
}

/** A tenant's quotas and hardware reservation; null: none. */
export interface TenantLimits {
  protectedVms: number | null;
  replicaBytes: number | null;
  concurrentTestFailovers: number | null;
  reservedCpus: number | null;
  reservedMemoryMiB: number | null;
  reservedStorageBytes: number | null;
}

export const LimitColumns: Record<keyof TenantLimits, string> = {
  protectedVms: 'quota_protected_vms', replicaBytes: 'quota_replica_bytes', concurrentTestFailovers: 'quota_test_failovers',
  reservedCpus: 'reserved_cpus', reservedMemoryMiB: 'reserved_memory_mib', reservedStorageBytes: 'reserved_storage_bytes',
};

const limitCols = Object.entries(LimitColumns).map(([k, c]) => `${c} AS "${k}"`).join(', ');

function numbers(r: Record<string, unknown>): TenantLimits {
  return Object.fromEntries(Object.keys(LimitColumns).map((k) => [k, r[k] === null || r[k] === undefined ? null : Number(r[k])])) as unknown as TenantLimits;
}

/** The tenant's limits; undefined when there is no such tenant. */
export async function getTenantLimits(db: Queryable, tenant: string): Promise<TenantLimits | undefined> {
  const r = (await db.query<Record<string, unknown>>(`SELECT ${limitCols} FROM tenants WHERE name = $1`, [tenant]))[0];
  return r ? numbers(r) : undefined;
}

/** Every tenant's limits (placement reads the other tenants' reservations). */
export async function listTenantLimits(db: Queryable): Promise<Map<string, TenantLimits>> {
  const rows = await db.query<Record<string, unknown>>(`SELECT name, ${limitCols} FROM tenants ORDER BY name`);
  return new Map(rows.map((r) => [String(r.name), numbers(r)]));
}

/** Sets the limits given (null: none); false when there is no such tenant. */
export async function setTenantLimits(db: Queryable, tenant: string, limits: Partial<TenantLimits>): Promise<boolean> {
  const sets: string[] = [];
  const params: unknown[] = [tenant];
  for (const [k, v] of Object.entries(limits)) {
    if (v === undefined) continue;
    params.push(v);
    sets.push(`${LimitColumns[k as keyof TenantLimits]} = $${params.length}`);
  }
  const rows = await db.query(`UPDATE tenants SET ${sets.length > 0 ? sets.join(', ') : 'name = name'} WHERE name = $1 RETURNING name`, params);
  return rows.length > 0;
}
