/**
 * Failovers, their steps, failover hosts and the VM configuration a failover uses (hardware, NICs).
 * The catalog is the authority for a failover: a step's row is written before its side effect, so a
 * killed worker or host finds where it was and resumes or cleans up (service/failover/job.ts).
 */
import type { Queryable } from './db.js';

export type FailoverKind = 'test' | 'planned' | 'unplanned';
/**
 * requested → preparing → booting → ready (test) | running (planned, unplanned)
 *   → committing → committed (real) ; → stopping → stopped (test) | reverted (real) ; failed
 *   committed → failing-back → failed-back (docs/failback.md; a failback that fails before the VM is
 *   removed puts it back to committed)
 */
export type FailoverState = 'requested' | 'preparing' | 'booting' | 'ready' | 'running' | 'committing' | 'committed'
  | 'stopping' | 'stopped' | 'reverted' | 'failed' | 'failing-back' | 'failed-back';
export type FailoverGoal = 'ready' | 'committed' | 'stopped' | 'reverted';

export interface ForkedDisk {
  disk: string;
  replicaDir: string;
  /** The point's frozen layer: the top of the chain the export reads. */
  layer: string;
  virtualSize: number;
  bus: string;
}

export interface FailoverRow {
  id: string;
  tenant: string;
  vm: string;
  kind: FailoverKind;
  state: FailoverState;
  goal: FailoverGoal;
  pointRequest: string;
  pointId: number | null;
  cycle: number | null;
  capturedAt: Date | null;
  host: string | null;
  vmGenerationId: string;
  fork: ForkedDisk[];
  spec: Record<string, unknown>;
  warnings: string[];
  network: unknown;
  error: string | null;
  idempotencyKey: string | null;
  requestedBy: string;
  planRunId: string | null;
  requestedAt: Date;
  startedAt: Date | null;
  readyAt: Date | null;
  endedAt: Date | null;
  expiresAt: Date | null;
  updatedAt: Date;
}

export interface FailoverStepRow {
  id: number;
  step: string;
  status: 'started' | 'done' | 'failed' | 'skipped';
  detail: string | null;
  cause: string | null;
  at: Date;
}

const cols = `id, tenant, vm, kind, state, goal, point_request AS "pointRequest", point_id AS "pointId", cycle,
  captured_at AS "capturedAt", host, vm_generation_id AS "vmGenerationId", fork, spec, warnings, network, error,
  idempotency_key AS "idempotencyKey", requested_by AS "requestedBy", plan_run_id AS "planRunId",
  requested_at AS "requestedAt", started_at AS "startedAt", ready_at AS "readyAt", ended_at AS "endedAt",
  expires_at AS "expiresAt", updated_at AS "updatedAt"`;

export async function insertFailover(db: Queryable, f: Pick<FailoverRow, 'id' | 'tenant' | 'vm' | 'kind' | 'pointRequest' | 'pointId' | 'host' | 'vmGenerationId' | 'spec' | 'warnings' | 'idempotencyKey' | 'requestedBy' | 'expiresAt'> & Partial<Pick<FailoverRow, 'planRunId'>>): Promise<FailoverRow> {
  const rows = await db.query<FailoverRow>(`INSERT INTO failovers (id, tenant, vm, kind, state, goal, point_request, point_id, host, vm_generation_id, spec, warnings,
      idempotency_key, requested_by, expires_at, plan_run_id)
    VALUES ($1, $2, $3, $4, 'requested', 'ready', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING ${cols}`,
  [f.id, f.tenant, f.vm, f.kind, f.pointRequest, f.pointId, f.host, f.vmGenerationId, JSON.stringify(f.spec), JSON.stringify(f.warnings),
    f.idempotencyKey, f.requestedBy, f.expiresAt, f.planRunId ?? null]);
  return rows[0]!;
}

export async function getFailover(db: Queryable, id: string, forUpdate = false): Promise<FailoverRow | undefined> {
  return (await db.query<FailoverRow>(`SELECT ${cols} FROM failovers WHERE id = $1${forUpdate ? ' FOR UPDATE' : ''}`, [id]))[0];
}

export async function findByIdempotencyKey(db: Queryable, tenant: string, key: string): Promise<FailoverRow | undefined> {
  return (await db.query<FailoverRow>(`SELECT ${cols} FROM failovers WHERE tenant = $1 AND idempotency_key = $2`, [tenant, key]))[0];
}

export async function listFailovers(db: Queryable, filter: { tenant?: string | undefined; vm?: string | undefined; active?: boolean | undefined; host?: string | undefined; planRunId?: string | undefined } = {}): Promise<FailoverRow[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  const add = (sql: string, v: unknown) => {
    params.push(v);
    where.push(sql.replace('?', `$${params.length}`));
  };
  if (filter.tenant !== undefined) add('tenant = ?', filter.tenant);
  if (filter.vm !== undefined) add('vm = ?', filter.vm);
  if (filter.host !== undefined) add('host = ?', filter.host);
  if (filter.planRunId !== undefined) add('plan_run_id = ?', filter.planRunId);
  if (filter.active) where.push('ended_at IS NULL');
  return db.query<FailoverRow>(`SELECT ${cols} FROM failovers ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY requested_at, id`, params);
}

/** Moves a failover to a new state (and optional columns); the step row says why. */
export async function setFailoverState(db: Queryable, id: string, state: FailoverState, extra: Partial<Pick<FailoverRow,
  'pointId' | 'cycle' | 'capturedAt' | 'fork' | 'error' | 'startedAt' | 'readyAt' | 'endedAt' | 'warnings' | 'network'>> = {}): Promise<void> {
  const sets = ['state = $2', 'updated_at = now()'];
  const params: unknown[] = [id, state];
  const col: Record<string, string> = { pointId: 'point_id', cycle: 'cycle', capturedAt: 'captured_at', fork: 'fork', error: 'error', startedAt: 'started_at',
    readyAt: 'ready_at', endedAt: 'ended_at', warnings: 'warnings', network: 'network' };
  for (const [k, v] of Object.entries(extra)) {
    params.push(k === 'fork' || k === 'warnings' || k === 'network' ? JSON.stringify(v) : v);
    sets.push(`${col[k]} = $${params.length}`);
  }
  await db.query(`UPDATE failovers SET ${sets.join(', ')} WHERE id = $1`, params);
}

export async function setFailoverGoal(db: Queryable, id: string, goal: FailoverGoal): Promise<void> {
  await db.query('UPDATE failovers SET goal = $2, updated_at = now() WHERE id = $1', [id, goal]);
}

export async function addStep(db: Queryable, failoverId: string, step: string, status: FailoverStepRow['status'], detail?: string, cause?: string): Promise<void> {
  await db.query('INSERT INTO failover_steps (failover_id, step, status, detail, cause) VALUES ($1, $2, $3, $4, $5)', [failoverId, step, status, detail ?? null, cause ?? null]);
}

export async function listSteps(db: Queryable, failoverId: string): Promise<FailoverStepRow[]> {
  return db.query<FailoverStepRow>('SELECT id, step, status, detail, cause, at FROM failover_steps WHERE failover_id = $1 ORDER BY id', [failoverId]);
}

export async function saveScreenshot(db: Queryable, failoverId: string, png: Buffer): Promise<void> {
  await db.query('INSERT INTO failover_screenshots (failover_id, png) VALUES ($1, $2)', [failoverId, png]);
}

export async function latestScreenshot(db: Queryable, failoverId: string): Promise<{ png: Buffer; takenAt: Date } | undefined> {
  const rows = await db.query<{ png: Uint8Array; takenAt: Date }>('SELECT png, taken_at AS "takenAt" FROM failover_screenshots WHERE failover_id = $1 ORDER BY taken_at DESC LIMIT 1', [failoverId]);
  return rows[0] ? { png: Buffer.from(rows[0].png), takenAt: rows[0].takenAt } : undefined;
}

// ---- failover hosts ----

export interface FailoverHostRow {
  name: string;
  cpus: number;
  memoryMiB: number;
  storageBytes: number;
  networks: string[];
  pid: number | null;
  startedAt: Date;
  heartbeatAt: Date;
}

const hostCols = 'name, cpus, memory_mib AS "memoryMiB", storage_bytes AS "storageBytes", networks, pid, started_at AS "startedAt", heartbeat_at AS "heartbeatAt"';

export async function upsertHost(db: Queryable, h: Pick<FailoverHostRow, 'name' | 'cpus' | 'memoryMiB' | 'storageBytes' | 'networks' | 'pid'>): Promise<void> {
  await db.query(`INSERT INTO failover_hosts (name, cpus, memory_mib, storage_bytes, networks, pid) VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (name) DO UPDATE SET cpus = $2, memory_mib = $3, storage_bytes = $4, networks = $5, pid = $6, started_at = now(), heartbeat_at = now()`,
  [h.name, h.cpus, h.memoryMiB, h.storageBytes, h.networks, h.pid]);
}

export async function heartbeatHost(db: Queryable, name: string): Promise<void> {
  await db.query('UPDATE failover_hosts SET heartbeat_at = now() WHERE name = $1', [name]);
}

export async function listHosts(db: Queryable): Promise<FailoverHostRow[]> {
  return db.query<FailoverHostRow>(`SELECT ${hostCols} FROM failover_hosts ORDER BY name`);
}

/** What the live failovers placed on each host use: vCPUs and memory, from their frozen spec. */
export async function hostUsage(db: Queryable): Promise<Map<string, { cpus: number; memoryMiB: number; count: number }>> {
  const rows = await db.query<{ host: string; cpus: number; memory: number; n: number }>(`SELECT host, coalesce(sum((spec->'hardware'->>'cpus')::int), 0)::int AS cpus,
    coalesce(sum((spec->'hardware'->>'memoryMiB')::bigint), 0)::bigint AS memory, count(*)::int AS n FROM failovers WHERE ended_at IS NULL AND host IS NOT NULL GROUP BY host`);
  return new Map(rows.map((r) => [r.host, { cpus: Number(r.cpus), memoryMiB: Number(r.memory), count: Number(r.n) }]));
}

// ---- the VM's recorded hardware ----

/** Who set a value: the VM's agent (its registration's report) or an operator (API, CLI). */
export type ConfigSource = 'reported' | 'operator';
export const HardwareFields = ['firmware', 'secureBoot', 'cpus', 'memoryMiB', 'guestOs', 'disks', 'readyProbes'] as const;
export type HardwareField = (typeof HardwareFields)[number];

export interface VmHardwareRow {
  firmware: 'bios' | 'uefi';
  secureBoot: boolean;
  cpus: number;
  memoryMiB: number;
  guestOs: 'linux' | 'windows' | 'other';
  disks: Record<string, { bus: string; order: number }>;
  readyProbes: unknown[];
  /** The record in one word: operator when an operator set any field, else reported when the agent did, else default. */
  source: string;
  /** Per field, who set it; a field absent has its default. */
  sources: Partial<Record<HardwareField, ConfigSource>>;
}

/** The row's one-word source from its fields' sources. */
export function summariseSources(sources: VmHardwareRow['sources']): string {
  const all = Object.values(sources);
  return all.includes('operator') ? 'operator' : all.includes('reported') ? 'reported' : 'default';
}

export async function getVmHardware(db: Queryable, tenant: string, vm: string, forUpdate = false): Promise<VmHardwareRow | undefined> {
  return (await db.query<VmHardwareRow>(`SELECT firmware, secure_boot AS "secureBoot", cpus, memory_mib AS "memoryMiB", guest_os AS "guestOs", disks, ready_probes AS "readyProbes", source, sources
    FROM vm_hardware WHERE tenant = $1 AND vm = $2${forUpdate ? ' FOR UPDATE' : ''}`, [tenant, vm]))[0];
}

/** Writes the whole record; `source` is derived from `sources`. */
export async function putVmHardware(db: Queryable, tenant: string, vm: string, h: Omit<VmHardwareRow, 'source'>): Promise<void> {
  await db.query(`INSERT INTO vm_hardware (tenant, vm, firmware, secure_boot, cpus, memory_mib, guest_os, disks, ready_probes, source, sources) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (tenant, vm) DO UPDATE SET firmware = $3, secure_boot = $4, cpus = $5, memory_mib = $6, guest_os = $7, disks = $8, ready_probes = $9, source = $10, sources = $11, updated_at = now()`,
  [tenant, vm, h.firmware, h.secureBoot, h.cpus, h.memoryMiB, h.guestOs, JSON.stringify(h.disks), JSON.stringify(h.readyProbes), summariseSources(h.sources), JSON.stringify(h.sources)]);
}

// ---- NICs ----

export interface VmNicRow {
  mac: string;
  position: number;
  model: string;
  settings: unknown;
  /** The addresses an operator recorded for the NIC at the source. */
  reportedAddresses: string[];
  /** Who put the NIC there or last changed it (an operator's NIC is never changed by a report). */
  source: ConfigSource;
  /** The addresses the VM's agent last reported for the NIC at the source. */
  agentAddresses: string[];
  agentReportedAt: Date | null;
}

const nicCols = `mac, position, model, settings, reported_addresses AS "reportedAddresses", source, agent_addresses AS "agentAddresses", agent_reported_at AS "agentReportedAt"`;

export async function listVmNics(db: Queryable, tenant: string, vm: string): Promise<VmNicRow[]> {
  return db.query<VmNicRow>(`SELECT ${nicCols} FROM vm_nics WHERE tenant = $1 AND vm = $2 ORDER BY position, mac`, [tenant, vm]);
}

/** Writes a NIC's operator-held fields (the agent's addresses stay as they are); `source` defaults to operator. */
export async function putVmNic(db: Queryable, tenant: string, vm: string, n: Pick<VmNicRow, 'mac' | 'position' | 'model' | 'settings' | 'reportedAddresses'> & Partial<Pick<VmNicRow, 'source'>>): Promise<void> {
  await db.query(`INSERT INTO vm_nics (tenant, vm, mac, position, model, settings, reported_addresses, source) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (tenant, vm, mac) DO UPDATE SET position = $4, model = $5, settings = $6, reported_addresses = $7, source = $8, updated_at = now()`,
  [tenant, vm, n.mac, n.position, n.model, JSON.stringify(n.settings), n.reportedAddresses, n.source ?? 'operator']);
}

/**
 * What the agent reported of one NIC: its addresses always; its model and position too while the NIC
 * is the agent's (source reported). A NIC not yet known is added as reported, without settings.
 */
export async function reportVmNic(db: Queryable, tenant: string, vm: string, n: { mac: string; position: number; model: string | undefined; addresses: string[] }): Promise<void> {
  await db.query(`INSERT INTO vm_nics (tenant, vm, mac, position, model, settings, source, agent_addresses, agent_reported_at) VALUES ($1, $2, $3, $4, coalesce($5, 'virtio'), '{}', 'reported', $6, now())
    ON CONFLICT (tenant, vm, mac) DO UPDATE SET agent_addresses = $6, agent_reported_at = now(),
      position = CASE WHEN vm_nics.source = 'reported' THEN $4 ELSE vm_nics.position END,
      model = CASE WHEN vm_nics.source = 'reported' THEN coalesce($5, vm_nics.model) ELSE vm_nics.model END, updated_at = now()`,
  [tenant, vm, n.mac, n.position, n.model ?? null, n.addresses]);
}

/** The addresses network mappings start from: the operator's record, else the agent's report. */
export function sourceAddresses(n: Pick<VmNicRow, 'reportedAddresses' | 'agentAddresses'>): string[] {
  return n.reportedAddresses.length > 0 ? n.reportedAddresses : n.agentAddresses;
}

/**
 * The live real failover (planned or unplanned) whose point is fixed, if the VM has one: while it
 * lives the failed-over VM is the primary, and forward logs that still arrive from the old primary
 * are held (left pending, never applied over it). Revert releases them.
 */
export async function holdingFailover(db: Queryable, tenant: string, vm: string): Promise<string | undefined> {
  const rows = await db.query<{ id: string }>(`SELECT id FROM failovers WHERE tenant = $1 AND vm = $2 AND kind <> 'test' AND ended_at IS NULL AND point_id IS NOT NULL LIMIT 1`, [tenant, vm]);
  return rows[0]?.id;
}
