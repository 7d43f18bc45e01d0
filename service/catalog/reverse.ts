/**
 * Reverse replication in the catalog (migration 014, docs/reverse.md): the envelope keys agents
 * registered, each reversed disk's generation and next sequence, its committed reverse logs, and
 * what the agent says it applied.
 */
import type { Queryable } from './db.js';

export interface EnvelopeKeyRow {
  tenant: string;
  serverFqdn: string;
  kid: string;
  jwk: Record<string, string>;
  registeredAt: Date;
}

const keyCols = `tenant, server_fqdn AS "serverFqdn", kid, jwk, registered_at AS "registeredAt"`;

/** Records a public key of a server (idempotent: the same kid again keeps its first time). */
export async function registerEnvelopeKey(db: Queryable, tenant: string, serverFqdn: string, kid: string, jwk: Record<string, string>): Promise<EnvelopeKeyRow> {
  await db.query(`INSERT INTO agent_envelope_keys (tenant, server_fqdn, kid, jwk) VALUES ($1, $2, $3, $4)
    ON CONFLICT (tenant, server_fqdn, kid) DO NOTHING`, [tenant, serverFqdn, kid, JSON.stringify(jwk)]);
  return (await db.query<EnvelopeKeyRow>(`SELECT ${keyCols} FROM agent_envelope_keys WHERE tenant = $1 AND server_fqdn = $2 AND kid = $3`, [tenant, serverFqdn, kid]))[0]!;
}

/** A server's keys, newest first (the first is the one the service seals to). */
export async function listEnvelopeKeys(db: Queryable, tenant: string, serverFqdn: string): Promise<EnvelopeKeyRow[]> {
  return db.query<EnvelopeKeyRow>(`SELECT ${keyCols} FROM agent_envelope_keys WHERE tenant = $1 AND server_fqdn = $2
    ORDER BY registered_at DESC, kid`, [tenant, serverFqdn]);
}

export interface ReverseDiskRow {
  tenant: string;
  vm: string;
  disk: string;
  failoverId: string;
  position: number;
  generation: number;
  nextSequence: number;
  appliedGeneration: number;
  appliedSequence: number;
  appliedAt: Date | null;
}

const diskCols = `tenant, vm, disk, failover_id AS "failoverId", position, generation::float8 AS generation,
  next_sequence::float8 AS "nextSequence", applied_generation::float8 AS "appliedGeneration",
  applied_sequence::float8 AS "appliedSequence", applied_at AS "appliedAt"`;

export async function listReverseDisks(db: Queryable, tenant: string, vm: string): Promise<ReverseDiskRow[]> {
  return db.query<ReverseDiskRow>(`SELECT ${diskCols} FROM reverse_disks WHERE tenant = $1 AND vm = $2 ORDER BY position`, [tenant, vm]);
}

export async function getReverseDisk(db: Queryable, tenant: string, vm: string, disk: string, forUpdate = false): Promise<ReverseDiskRow | undefined> {
  return (await db.query<ReverseDiskRow>(`SELECT ${diskCols} FROM reverse_disks WHERE tenant = $1 AND vm = $2 AND disk = $3${forUpdate ? ' FOR UPDATE' : ''}`, [tenant, vm, disk]))[0];
}

/**
 * Starts (or keeps) reverse replication of a disk for a failover: a disk reversed for another
 * failover before starts a new generation (its sequence at 1); the same failover changes nothing.
 */
export async function startReverseDisk(db: Queryable, r: { tenant: string; vm: string; disk: string; failoverId: string; position: number }): Promise<ReverseDiskRow> {
  await db.query(`INSERT INTO reverse_disks (tenant, vm, disk, failover_id, position, generation) VALUES ($1, $2, $3, $4, $5, 1)
    ON CONFLICT (tenant, vm, disk) DO UPDATE SET failover_id = EXCLUDED.failover_id, position = EXCLUDED.position,
      generation = reverse_disks.generation + 1, next_sequence = 1
    WHERE reverse_disks.failover_id <> EXCLUDED.failover_id`, [r.tenant, r.vm, r.disk, r.failoverId, r.position]);
  return (await getReverseDisk(db, r.tenant, r.vm, r.disk))!;
}

/** Starts a new generation of a disk (its reverse bitmap was lost: the next log is a delta of all it holds). */
export async function newReverseGeneration(db: Queryable, tenant: string, vm: string, disk: string): Promise<void> {
  await db.query('UPDATE reverse_disks SET generation = generation + 1, next_sequence = 1 WHERE tenant = $1 AND vm = $2 AND disk = $3', [tenant, vm, disk]);
}

export interface ReverseLogRow {
  tenant: string;
  vm: string;
  disk: string;
  generation: number;
  sequence: number;
  kind: 'delta' | 'incremental';
  key: string;
  size: number;
  sha256: string;
  kid: string;
  cycle: number;
  capturedAt: Date;
  dataBytes: number;
  changedBytes: number;
  createdAt: Date;
}

const logCols = `tenant, vm, disk, generation::float8 AS generation, sequence::float8 AS sequence, kind, key, size::float8 AS size,
  sha256, kid, cycle::float8 AS cycle, captured_at AS "capturedAt", data_bytes::float8 AS "dataBytes",
  changed_bytes::float8 AS "changedBytes", created_at AS "createdAt"`;

/**
 * Records a stored reverse log and advances the disk's next sequence, in one statement pair the
 * caller runs in a transaction. The row must be for the disk's current generation and next sequence.
 */
export async function insertReverseLog(db: Queryable, l: Omit<ReverseLogRow, 'createdAt'>): Promise<void> {
  await db.query(`INSERT INTO reverse_logs (tenant, vm, disk, generation, sequence, kind, key, size, sha256, kid, cycle, captured_at, data_bytes, changed_bytes)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
  [l.tenant, l.vm, l.disk, l.generation, l.sequence, l.kind, l.key, l.size, l.sha256, l.kid, l.cycle, l.capturedAt, l.dataBytes, l.changedBytes]);
  await db.query('UPDATE reverse_disks SET next_sequence = $5 + 1 WHERE tenant = $1 AND vm = $2 AND disk = $3 AND generation = $4',
    [l.tenant, l.vm, l.disk, l.generation, l.sequence]);
}

/** Logs after (generation, sequence), in order. */
export async function listReverseLogs(db: Queryable, tenant: string, vm: string, disk: string, after: { generation: number; sequence: number }, limit: number): Promise<ReverseLogRow[]> {
  return db.query<ReverseLogRow>(`SELECT ${logCols} FROM reverse_logs WHERE tenant = $1 AND vm = $2 AND disk = $3
    AND (generation > $4 OR (generation = $4 AND sequence > $5)) ORDER BY generation, sequence LIMIT $6`,
  [tenant, vm, disk, after.generation, after.sequence, limit]);
}

/** Pending logs and bytes (after what the agent applied) and the newest capture time of a disk. */
export async function reverseBacklog(db: Queryable, d: ReverseDiskRow): Promise<{ pendingLogs: number; pendingBytes: number; lastCapturedAt: Date | null }> {
  const [row] = await db.query<{ n: number; bytes: number }>(`SELECT count(*)::float8 AS n, coalesce(sum(size), 0)::float8 AS bytes FROM reverse_logs
    WHERE tenant = $1 AND vm = $2 AND disk = $3 AND (generation > $4 OR (generation = $4 AND sequence > $5))`,
  [d.tenant, d.vm, d.disk, d.appliedGeneration, d.appliedSequence]);
  const [last] = await db.query<{ at: Date | null }>('SELECT max(captured_at) AS at FROM reverse_logs WHERE tenant = $1 AND vm = $2 AND disk = $3', [d.tenant, d.vm, d.disk]);
  return { pendingLogs: row?.n ?? 0, pendingBytes: row?.bytes ?? 0, lastCapturedAt: last?.at ?? null };
}

/** The agent applied up to (generation, sequence): never moves back. */
export async function recordReverseApplied(db: Queryable, tenant: string, vm: string, disk: string, generation: number, sequence: number): Promise<void> {
  await db.query(`UPDATE reverse_disks SET applied_generation = $4, applied_sequence = $5, applied_at = now()
    WHERE tenant = $1 AND vm = $2 AND disk = $3 AND (applied_generation < $4 OR (applied_generation = $4 AND applied_sequence < $5))`,
  [tenant, vm, disk, generation, sequence]);
}
