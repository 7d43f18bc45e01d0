/**
 * DR networks (hoster-owned), their grants to tenants, each tenant's network mappings, and the
 * catalog reads that NIC validation needs: the tenant's NICs with their stored settings, the
 * addresses its VMs hold per DR network, and who still names a network.
 * Plain SQL; the checks live in the callers (service/api/networks.ts, nics.ts).
 */
import type { NetworkMapping } from '../failover/network/mappings.js';
import type { AddressInUse, FailoverKind, NicSettings } from '../failover/network/settings.js';
import type { Queryable } from './db.js';

export interface NetworkRow {
  name: string;
  kind: FailoverKind;
  bridge: string;
  vlan: number | null;
  hosts: string[];
  createdAt: Date;
  /** The tenants it is granted to (listNetworks fills it). */
  tenants: string[];
}

const netCols = `n.name, n.kind, n.bridge, n.vlan, n.hosts, n.created_at AS "createdAt",
  coalesce((SELECT array_agg(g.tenant ORDER BY g.tenant) FROM network_grants g WHERE g.network = n.name), '{}') AS tenants`;

/** Inserts a network; false when one of that name exists. */
export async function insertNetwork(db: Queryable, n: Pick<NetworkRow, 'name' | 'kind' | 'bridge' | 'vlan' | 'hosts'>): Promise<boolean> {
  const rows = await db.query('INSERT INTO networks (name, kind, bridge, vlan, hosts) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING name',
    [n.name, n.kind, n.bridge, n.vlan, n.hosts]);
  return rows.length === 1;
}

export async function getNetwork(db: Queryable, name: string): Promise<NetworkRow | undefined> {
  return (await db.query<NetworkRow>(`SELECT ${netCols} FROM networks n WHERE n.name = $1`, [name]))[0];
}

/** Every network, or those granted to one tenant; by name. */
export async function listNetworks(db: Queryable, tenant?: string): Promise<NetworkRow[]> {
  return tenant === undefined
    ? db.query<NetworkRow>(`SELECT ${netCols} FROM networks n ORDER BY n.name`)
    : db.query<NetworkRow>(`SELECT ${netCols} FROM networks n JOIN network_grants g ON g.network = n.name AND g.tenant = $1 ORDER BY n.name`, [tenant]);
}

/** Deletes a network no tenant is granted (the caller checks); true when there was one. */
export async function deleteNetwork(db: Queryable, name: string): Promise<boolean> {
  return (await db.query('DELETE FROM networks n WHERE n.name = $1 AND NOT EXISTS (SELECT 1 FROM network_grants g WHERE g.network = n.name) RETURNING name', [name])).length === 1;
}

/** Grants a network to a tenant; true when the grant is new. */
export async function grantNetwork(db: Queryable, network: string, tenant: string): Promise<boolean> {
  return (await db.query('INSERT INTO network_grants (network, tenant) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING network', [network, tenant])).length === 1;
}

/** Revokes a grant; true when there was one. */
export async function revokeNetwork(db: Queryable, network: string, tenant: string): Promise<boolean> {
  return (await db.query('DELETE FROM network_grants WHERE network = $1 AND tenant = $2 RETURNING network', [network, tenant])).length === 1;
}

/** The networks granted to a tenant, name → kind. */
export async function grantedKinds(db: Queryable, tenant: string): Promise<Map<string, FailoverKind>> {
  const rows = await db.query<{ name: string; kind: FailoverKind }>('SELECT n.name, n.kind FROM networks n JOIN network_grants g ON g.network = n.name WHERE g.tenant = $1', [tenant]);
  return new Map(rows.map((r) => [r.name, r.kind]));
}

/**
 * Holds the tenant's row until the transaction ends, so two writers of one tenant's NICs, mappings
 * or grants validate one after the other (the duplicate-address check reads every VM of the tenant).
 */
export async function lockTenantNetworking(tx: Queryable, tenant: string): Promise<boolean> {
  return (await tx.query('SELECT name FROM tenants WHERE name = $1 FOR UPDATE', [tenant])).length === 1;
}

// ---- mappings ----

interface MappingDbRow { kind: FailoverKind; source: string; target: string; gateway: string | null; dns: string[]; search: string[]; network: string | null }

/** The tenant's mappings in the order it gave them. */
export async function listMappings(db: Queryable, tenant: string): Promise<NetworkMapping[]> {
  const rows = await db.query<MappingDbRow>('SELECT kind, source, target, gateway, dns, search, network FROM network_mappings WHERE tenant = $1 ORDER BY position, kind, source', [tenant]);
  return rows.map((r) => ({
    kind: r.kind, source: r.source, target: r.target, ...(r.gateway === null ? {} : { gateway: r.gateway }), dns: r.dns, search: r.search,
    ...(r.network === null ? {} : { network: r.network }),
  }));
}

/** Replaces the tenant's whole set (already validated as a whole). */
export async function replaceMappings(tx: Queryable, tenant: string, mappings: readonly NetworkMapping[]): Promise<void> {
  await tx.query('DELETE FROM network_mappings WHERE tenant = $1', [tenant]);
  let position = 0;
  for (const m of mappings) {
    await tx.query('INSERT INTO network_mappings (tenant, kind, source, target, gateway, dns, search, network, position) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)',
      [tenant, m.kind, m.source, m.target, m.gateway ?? null, m.dns, m.search, m.network ?? null, position++]);
  }
}

// ---- NICs across the tenant ----

export interface TenantNicRow {
  vm: string;
  mac: string;
  position: number;
  model: string;
  settings: Omit<NicSettings, 'mac'>;
  reportedAddresses: string[];
}

/** Every NIC of the tenant's VMs, by VM and position. */
export async function listTenantNics(db: Queryable, tenant: string): Promise<TenantNicRow[]> {
  return db.query<TenantNicRow>('SELECT vm, mac, position, model, settings, reported_addresses AS "reportedAddresses" FROM vm_nics WHERE tenant = $1 ORDER BY vm, position, mac', [tenant]);
}

export async function deleteVmNic(db: Queryable, tenant: string, vm: string, mac: string): Promise<boolean> {
  return (await db.query('DELETE FROM vm_nics WHERE tenant = $1 AND vm = $2 AND mac = $3 RETURNING mac', [tenant, vm, mac])).length === 1;
}

/**
 * The static addresses NICs hold in named DR networks, for validateVmNics and resolveNicPlan:
 * one entry per address, its owner named `vm web2 nic 52:54:00:00:00:02 (production)`.
 */
export function addressesInNetworks(nics: readonly { vm: string; mac: string; settings: Omit<NicSettings, 'mac'> }[], kind?: FailoverKind): AddressInUse[] {
  const out: AddressInUse[] = [];
  for (const n of nics) {
    for (const k of ['production', 'test'] as const) {
      if (kind !== undefined && k !== kind) continue;
      const cfg = n.settings[k];
      if (cfg?.mode !== 'static' || cfg.network === undefined) continue;
      for (const address of cfg.addresses) out.push({ network: cfg.network, address, owner: `vm ${n.vm} nic ${n.mac} (${k})` });
    }
  }
  return out;
}

/** Who names a network for a tenant: NIC settings and mappings, as short phrases (at most `max`). */
export async function networkUsers(db: Queryable, network: string, tenant: string, max = 5): Promise<string[]> {
  const nics = await db.query<{ vm: string; mac: string }>(`SELECT vm, mac FROM vm_nics WHERE tenant = $1
    AND (settings->'production'->>'network' = $2 OR settings->'test'->>'network' = $2) ORDER BY vm, position LIMIT $3`, [tenant, network, max]);
  const maps = await db.query<{ kind: string; source: string }>('SELECT kind, source FROM network_mappings WHERE tenant = $1 AND network = $2 ORDER BY position LIMIT $3', [tenant, network, max]);
  return [...nics.map((n) => `vm ${n.vm} nic ${n.mac}`), ...maps.map((m) => `${m.kind} mapping of ${m.source}`)].slice(0, max);
}
