/** VMs and their disks: settings from registration and each disk's replication state. */
import type { Queryable } from './db.js';

export interface VmRow {
  tenant: string;
  name: string;
  displayName: string | null;
  serverFqdn: string;
  authorizationId: number;
  trustGroup: string;
  storageDir: string;
  frequencySeconds: number;
  history: number;
  appConsistentEvery: number;
  compression: string;
  protected: boolean;
  createdAt: Date;
}

export type DiskState = 'initial_required' | 'initial_in_progress' | 'replicating' | 'resync_required';

export interface DiskRow {
  tenant: string;
  vm: string;
  id: string;
  virtualSize: number;
  sourceFormat: string;
  replicaDir: string;
  generation: number;
  baseComplete: boolean;
  appliedSequence: number;
  state: DiskState;
  resyncReason: string | null;
  lastAppliedAt: Date | null;
}

const vmCols = `tenant, name, display_name AS "displayName", server_fqdn AS "serverFqdn", authorization_id AS "authorizationId",
  trust_group AS "trustGroup", storage_dir AS "storageDir", frequency_seconds AS "frequencySeconds", history,
  app_consistent_every AS "appConsistentEvery", compression, protected, created_at AS "createdAt"`;
const diskCols = `tenant, vm, id, virtual_size AS "virtualSize", source_format AS "sourceFormat", replica_dir AS "replicaDir",
  generation, base_complete AS "baseComplete", applied_sequence AS "appliedSequence", state, resync_reason AS "resyncReason",
  last_applied_at AS "lastAppliedAt"`;

export async function getVm(db: Queryable, tenant: string, name: string, forUpdate = false): Promise<VmRow | undefined> {
  return (await db.query<VmRow>(`SELECT ${vmCols} FROM vms WHERE tenant = $1 AND name = $2${forUpdate ? ' FOR UPDATE' : ''}`, [tenant, name]))[0];
}

export async function listVms(db: Queryable, tenant?: string): Promise<VmRow[]> {
  return tenant === undefined
    ? db.query<VmRow>(`SELECT ${vmCols} FROM vms ORDER BY tenant, name`)
    : db.query<VmRow>(`SELECT ${vmCols} FROM vms WHERE tenant = $1 ORDER BY name`, [tenant]);
}

export async function insertVm(db: Queryable, v: Omit<VmRow, 'createdAt' | 'protected'>): Promise<void> {
  await db.query(`INSERT INTO vms (tenant, name, display_name, server_fqdn, authorization_id, trust_group, storage_dir,
      frequency_seconds, history, app_consistent_every, compression) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)`,
  [v.tenant, v.name, v.displayName, v.serverFqdn, v.authorizationId, v.trustGroup, v.storageDir, v.frequencySeconds, v.history, v.appConsistentEvery, v.compression]);
}

export async function updateVmSettings(db: Queryable, v: Pick<VmRow, 'tenant' | 'name' | 'displayName' | 'serverFqdn' | 'frequencySeconds' | 'history' | 'appConsistentEvery' | 'compression'>): Promise<void> {
  await db.query(`UPDATE vms SET display_name = $3, server_fqdn = $4, frequency_seconds = $5, history = $6, app_consistent_every = $7,
      compression = $8, protected = true, updated_at = now() WHERE tenant = $1 AND name = $2`,
  [v.tenant, v.name, v.displayName, v.serverFqdn, v.frequencySeconds, v.history, v.appConsistentEvery, v.compression]);
}

export async function setVmProtected(db: Queryable, tenant: string, name: string, value: boolean): Promise<void> {
  await db.query('UPDATE vms SET protected = $3, updated_at = now() WHERE tenant = $1 AND name = $2', [tenant, name, value]);
}

export async function listDisks(db: Queryable, tenant: string, vm: string): Promise<DiskRow[]> {
  return db.query<DiskRow>(`SELECT ${diskCols} FROM disks WHERE tenant = $1 AND vm = $2 ORDER BY id`, [tenant, vm]);
}

export async function getDisk(db: Queryable, tenant: string, vm: string, id: string, forUpdate = false): Promise<DiskRow | undefined> {
  return (await db.query<DiskRow>(`SELECT ${diskCols} FROM disks WHERE tenant = $1 AND vm = $2 AND id = $3${forUpdate ? ' FOR UPDATE' : ''}`, [tenant, vm, id]))[0];
}

/** The columns of cols (as vmCols and diskCols list them) read from table alias t, named `<t>.<name>`. */
function prefixed(cols: string, t: string): string {
  return cols.split(',').map((c) => {
    const [column, alias] = c.trim().split(/\s+AS\s+/);
    return `${t}.${column} AS "${t}.${alias ? alias.replace(/"/g, '') : column}"`;
  }).join(', ');
}
const vmDiskCols = `${prefixed(vmCols, 'v')}, ${prefixed(diskCols, 'd')}`;

/**
 * A VM and one of its disks in one query (an agent's every grant and commit asks for both); undefined
 * when either is missing. forUpdate locks the disk's row only, as getDisk does.
 */
export async function getVmDisk(db: Queryable, tenant: string, vm: string, id: string, forUpdate = false): Promise<{ vm: VmRow; disk: DiskRow } | undefined> {
  const rows = await db.query<Record<string, unknown>>(`SELECT ${vmDiskCols} FROM vms v JOIN disks d ON d.tenant = v.tenant AND d.vm = v.name
    WHERE v.tenant = $1 AND v.name = $2 AND d.id = $3${forUpdate ? ' FOR UPDATE OF d' : ''}`, [tenant, vm, id]);
  const row = rows[0];
  if (!row) return undefined;
  const part = (t: string) => Object.fromEntries(Object.entries(row).filter(([k]) => k.startsWith(`${t}.`)).map(([k, v]) => [k.slice(2), v]));
  return { vm: part('v') as unknown as VmRow, disk: part('d') as unknown as DiskRow };
}

export async function insertDisk(db: Queryable, d: Pick<DiskRow, 'tenant' | 'vm' | 'id' | 'virtualSize' | 'sourceFormat' | 'replicaDir'>): Promise<void> {
  await db.query('INSERT INTO disks (tenant, vm, id, virtual_size, source_format, replica_dir) VALUES ($1,$2,$3,$4,$5,$6)',
    [d.tenant, d.vm, d.id, d.virtualSize, d.sourceFormat, d.replicaDir]);
}

export async function updateDiskSize(db: Queryable, tenant: string, vm: string, id: string, virtualSize: number): Promise<void> {
  await db.query('UPDATE disks SET virtual_size = $4, updated_at = now() WHERE tenant = $1 AND vm = $2 AND id = $3', [tenant, vm, id, virtualSize]);
}

/** Makes the catalog follow a disk's applied state (the file beside the replica is the authority). */
export async function setDiskState(db: Queryable, tenant: string, vm: string, id: string,
  s: { generation: number; baseComplete: boolean; appliedSequence: number; appliedCycle?: number | null; state: DiskState; resyncReason: string | null; lastAppliedAt: Date | null }): Promise<void> {
  await db.query(`UPDATE disks SET generation = $4, base_complete = $5, applied_sequence = $6, state = $7, resync_reason = $8,
      last_applied_at = COALESCE($9, last_applied_at), applied_cycle = $10, updated_at = now() WHERE tenant = $1 AND vm = $2 AND id = $3`,
  [tenant, vm, id, s.generation, s.baseComplete, s.appliedSequence, s.state, s.resyncReason, s.lastAppliedAt, s.appliedCycle ?? null]);
}
