/**
 * Public addresses (migration 006): the hoster's pools and their grants to tenants, each tenant's
 * mappings of a granted address to a VM, and what each failover applied on its host.
 * Plain SQL; the checks live in the callers (service/api/public-ips.ts, service/failover/public-ips.ts).
 */
import type { Queryable } from './db.js';

export interface PublicAddressRow {
  address: string;
  pool: string;
  tenant: string | null;
  /** The VM its tenant mapped it to, if any. */
  vm: string | null;
}

export interface PoolRow {
  name: string;
  createdAt: Date;
  addresses: PublicAddressRow[];
}

export interface PublicMappingRow {
  address: string;
  tenant: string;
  vm: string;
  mac: string | null;
  drAddress: string | null;
  allow: string[];
  test: boolean;
  createdAt: Date;
  updatedAt: Date;
}

export interface AppliedPublicIpRow {
  address: string;
  drAddress: string;
  mac: string | null;
  allow: string[];
  appliedAt: Date;
  removedAt: Date | null;
}

const addressCols = 'p.address, p.pool, p.tenant, m.vm';
const addressFrom = 'public_ips p LEFT JOIN public_ip_mappings m ON m.address = p.address';

// ---- pools ----

/** Inserts a pool and its addresses in order; false when a pool of that name exists. */
export async function insertPool(tx: Queryable, name: string, addresses: readonly string[]): Promise<boolean> {
  if ((await tx.query('INSERT INTO public_ip_pools (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING name', [name])).length === 0) return false;
  await tx.query('INSERT INTO public_ips (address, pool, position) SELECT a, $1, i FROM unnest($2::text[]) WITH ORDINALITY AS t(a, i)', [name, addresses]);
  return true;
}

/** Which of these addresses some pool already holds: address → pool. */
export async function poolsHolding(db: Queryable, addresses: readonly string[]): Promise<Map<string, string>> {
  const rows = await db.query<{ address: string; pool: string }>('SELECT address, pool FROM public_ips WHERE address = ANY($1::text[])', [addresses]);
  return new Map(rows.map((r) => [r.address, r.pool]));
}

export async function getPool(db: Queryable, name: string): Promise<PoolRow | undefined> {
  const pool = (await db.query<{ name: string; createdAt: Date }>('SELECT name, created_at AS "createdAt" FROM public_ip_pools WHERE name = $1', [name]))[0];
  if (!pool) return undefined;
  return { ...pool, addresses: await db.query<PublicAddressRow>(`SELECT ${addressCols} FROM ${addressFrom} WHERE p.pool = $1 ORDER BY p.position`, [name]) };
}

/** Every pool with its addresses; with a tenant, only pools that grant it some, and only its addresses. */
export async function listPools(db: Queryable, tenant?: string): Promise<PoolRow[]> {
  const pools = await db.query<{ name: string; createdAt: Date }>(tenant === undefined
    ? 'SELECT name, created_at AS "createdAt" FROM public_ip_pools ORDER BY name'
    : 'SELECT name, created_at AS "createdAt" FROM public_ip_pools o WHERE EXISTS (SELECT 1 FROM public_ips p WHERE p.pool = o.name AND p.tenant = $1) ORDER BY name',
  tenant === undefined ? [] : [tenant]);
  const addresses = await db.query<PublicAddressRow>(tenant === undefined
    ? `SELECT ${addressCols} FROM ${addressFrom} ORDER BY p.pool, p.position`
    : `SELECT ${addressCols} FROM ${addressFrom} WHERE p.tenant = $1 ORDER BY p.pool, p.position`, tenant === undefined ? [] : [tenant]);
  return pools.map((p) => ({ ...p, addresses: addresses.filter((a) => a.pool === p.name) }));
}

/** Deletes a pool none of whose addresses is granted; true when it was deleted. */
export async function deletePool(db: Queryable, name: string): Promise<boolean> {
  return (await db.query(`DELETE FROM public_ip_pools o WHERE o.name = $1
    AND NOT EXISTS (SELECT 1 FROM public_ips p WHERE p.pool = o.name AND p.tenant IS NOT NULL) RETURNING name`, [name])).length === 1;
}

/** Holds the pool's row until the transaction ends, so two grants from one pool take turns. */
export async function lockPool(tx: Queryable, name: string): Promise<boolean> {
  return (await tx.query('SELECT name FROM public_ip_pools WHERE name = $1 FOR UPDATE', [name])).length === 1;
}

/** Grants these addresses of the pool to the tenant (the caller checked they are free or its own). */
export async function grantAddresses(tx: Queryable, pool: string, tenant: string, addresses: readonly string[]): Promise<void> {
  await tx.query('UPDATE public_ips SET tenant = $2, granted_at = now() WHERE pool = $1 AND address = ANY($3::text[]) AND tenant IS NULL', [pool, tenant, addresses]);
}

/** Takes addresses of the pool back from the tenant (the caller checked none is mapped). */
export async function revokeAddresses(tx: Queryable, pool: string, tenant: string, addresses: readonly string[]): Promise<number> {
  return (await tx.query('UPDATE public_ips SET tenant = NULL, granted_at = NULL WHERE pool = $1 AND tenant = $2 AND address = ANY($3::text[]) RETURNING address', [pool, tenant, addresses])).length;
}

/** The addresses granted to a tenant (from every pool), with the VM each is mapped to and its position in its pool. */
export async function tenantAddresses(db: Queryable, tenant: string): Promise<(PublicAddressRow & { position: number })[]> {
  return db.query(`SELECT ${addressCols}, p.position FROM ${addressFrom} WHERE p.tenant = $1 ORDER BY p.pool, p.position`, [tenant]);
}

export async function getPublicAddress(db: Queryable, address: string): Promise<PublicAddressRow | undefined> {
  return (await db.query<PublicAddressRow>(`SELECT ${addressCols} FROM ${addressFrom} WHERE p.address = $1`, [address]))[0];
}

// ---- mappings ----

const mappingCols = `address, tenant, vm, mac, dr_address AS "drAddress", allow, test, created_at AS "createdAt", updated_at AS "updatedAt"`;

/** The tenant's mappings (of one VM), by address. */
export async function listPublicMappings(db: Queryable, tenant: string, vm?: string): Promise<PublicMappingRow[]> {
  return vm === undefined
    ? db.query<PublicMappingRow>(`SELECT ${mappingCols} FROM public_ip_mappings WHERE tenant = $1 ORDER BY address`, [tenant])
    : db.query<PublicMappingRow>(`SELECT ${mappingCols} FROM public_ip_mappings WHERE tenant = $1 AND vm = $2 ORDER BY address`, [tenant, vm]);
}

export async function getPublicMapping(db: Queryable, tenant: string, address: string): Promise<PublicMappingRow | undefined> {
  return (await db.query<PublicMappingRow>(`SELECT ${mappingCols} FROM public_ip_mappings WHERE tenant = $1 AND address = $2`, [tenant, address]))[0];
}

/** Creates (create: true, false when the address is mapped already) or replaces a mapping; the row after. */
export async function putPublicMapping(db: Queryable, m: Pick<PublicMappingRow, 'address' | 'tenant' | 'vm' | 'mac' | 'drAddress' | 'allow' | 'test'>, create: boolean): Promise<PublicMappingRow | undefined> {
  const params = [m.address, m.tenant, m.vm, m.mac, m.drAddress, m.allow, m.test];
  const rows = create
    ? await db.query<PublicMappingRow>(`INSERT INTO public_ip_mappings (address, tenant, vm, mac, dr_address, allow, test) VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (address) DO NOTHING RETURNING ${mappingCols}`, params)
    : await db.query<PublicMappingRow>(`UPDATE public_ip_mappings SET vm = $3, mac = $4, dr_address = $5, allow = $6, test = $7, updated_at = now()
        WHERE address = $1 AND tenant = $2 RETURNING ${mappingCols}`, params);
  return rows[0];
}

export async function deletePublicMapping(db: Queryable, tenant: string, address: string): Promise<boolean> {
  return (await db.query('DELETE FROM public_ip_mappings WHERE tenant = $1 AND address = $2 RETURNING address', [tenant, address])).length === 1;
}

// ---- what failovers applied ----

const appliedCols = 'address, dr_address AS "drAddress", mac, allow, applied_at AS "appliedAt", removed_at AS "removedAt"';

/** What a failover applied (still applied only, or every row including removed ones), by address. */
export async function listAppliedPublicIps(db: Queryable, failoverId: string, activeOnly = false): Promise<AppliedPublicIpRow[]> {
  return db.query<AppliedPublicIpRow>(`SELECT ${appliedCols} FROM failover_public_ips WHERE failover_id = $1${activeOnly ? ' AND removed_at IS NULL' : ''} ORDER BY address`, [failoverId]);
}

/** Of these addresses, those another failover holds now: address → failover id. */
export async function heldByOthers(db: Queryable, failoverId: string, addresses: readonly string[]): Promise<Map<string, string>> {
  const rows = await db.query<{ address: string; failoverId: string }>(`SELECT address, failover_id AS "failoverId" FROM failover_public_ips
    WHERE removed_at IS NULL AND failover_id <> $1 AND address = ANY($2::text[])`, [failoverId, addresses]);
  return new Map(rows.map((r) => [r.address, r.failoverId]));
}

/** Makes the failover's applied set exactly these rows (before the rules change: write, then act). */
export async function recordApplied(tx: Queryable, failoverId: string, rows: readonly Pick<AppliedPublicIpRow, 'address' | 'drAddress' | 'mac' | 'allow'>[]): Promise<void> {
  await tx.query('UPDATE failover_public_ips SET removed_at = now() WHERE failover_id = $1 AND removed_at IS NULL AND NOT (address = ANY($2::text[]))', [failoverId, rows.map((r) => r.address)]);
  for (const r of rows) {
    await tx.query(`INSERT INTO failover_public_ips (failover_id, address, dr_address, mac, allow) VALUES ($1, $2, $3, $4, $5)
      ON CONFLICT (failover_id, address) DO UPDATE SET dr_address = $3, mac = $4, allow = $5, removed_at = NULL,
        applied_at = CASE WHEN failover_public_ips.removed_at IS NULL AND failover_public_ips.dr_address = $3 AND failover_public_ips.allow = $5 THEN failover_public_ips.applied_at ELSE now() END`,
    [failoverId, r.address, r.drAddress, r.mac, r.allow]);
  }
}

/** Marks everything the failover still holds as removed (after its table is gone). */
export async function markRemoved(db: Queryable, failoverId: string): Promise<void> {
  await db.query('UPDATE failover_public_ips SET removed_at = now() WHERE failover_id = $1 AND removed_at IS NULL', [failoverId]);
}

/** Failovers of this host that ended with rules still recorded as applied (a teardown cut short). */
export async function endedWithPublicIps(db: Queryable, host: string): Promise<string[]> {
  const rows = await db.query<{ id: string }>(`SELECT DISTINCT f.id FROM failover_public_ips a JOIN failovers f ON f.id = a.failover_id
    WHERE f.host = $1 AND f.ended_at IS NOT NULL AND a.removed_at IS NULL ORDER BY f.id`, [host]);
  return rows.map((r) => r.id);
}
