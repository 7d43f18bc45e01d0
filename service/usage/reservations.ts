/**
 * Hardware plans (docs/usage.md), as Veeam Cloud Connect sells them: a tenant's reservation of vCPUs,
 * memory and overlay storage on the failover hosts. Two rules, checked by placement and by the
 * admission check before a failover:
 *
 * - the plan: a tenant with a reservation uses at most that much (its live failovers plus the new
 *   one) in each reserved resource;
 * - the others' share: what a failover needs beyond its own tenant's unused reservation comes out of
 *   the capacity no other tenant has reserved and left unused.
 *
 * A test failover breaking either rule is refused (409, reason `reservation_exceeded`); a planned or
 * unplanned one goes ahead where a host has room, and its warnings say which rule it broke.
 */
import type { Queryable } from '../catalog/db.js';
import { listTenantLimits } from '../catalog/usage.js';
import { formatBytes } from '../../shared/units.js';

export interface Resources {
  cpus: number;
  memoryMiB: number;
  storageBytes: number;
}

export const Dimensions = ['cpus', 'memoryMiB', 'storageBytes'] as const;
type Reserved = Record<keyof Resources, number | null>;

export interface ReservationPicture {
  /** The tenant's reservation per resource (null: none in that resource), or null: no plan at all. */
  reserved: Reserved | null;
  /** What its live failovers hold. */
  inUse: Resources;
  /** The other tenants' reservations they do not use now. */
  heldForOthers: Resources;
}

const zero = (): Resources => ({ cpus: 0, memoryMiB: 0, storageBytes: 0 });

const show = (d: keyof Resources, v: number) => (d === 'cpus' ? `${v} vCPUs` : d === 'memoryMiB' ? `${v} MiB of memory` : `${formatBytes(v)} of overlay storage`);

/** What each tenant's live failovers hold on the failover hosts (placed, not ended). */
export async function resourcesInUse(db: Queryable): Promise<Map<string, Resources>> {
  const rows = await db.query<{ tenant: string; cpus: number; memory: number; storage: number }>(`SELECT f.tenant,
      sum(coalesce((f.spec->'hardware'->>'cpus')::int, 1))::int8 AS cpus, sum(coalesce((f.spec->'hardware'->>'memoryMiB')::bigint, 1024))::int8 AS memory,
      sum(s.bytes)::int8 AS storage
    FROM failovers f CROSS JOIN LATERAL (SELECT coalesce(sum(d.virtual_size), 0) AS bytes FROM disks d WHERE d.tenant = f.tenant AND d.vm = f.vm
      AND f.spec->'disks' @> jsonb_build_array(jsonb_build_object('id', d.id))) s
    WHERE f.ended_at IS NULL AND f.host IS NOT NULL GROUP BY f.tenant`);
  return new Map(rows.map((r) => [r.tenant, { cpus: Number(r.cpus), memoryMiB: Number(r.memory), storageBytes: Number(r.storage) }]));
}

/** The tenant's reservation, its use, and what the other tenants hold back. */
export async function reservationPicture(db: Queryable, tenant: string): Promise<ReservationPicture> {
  const limits = await listTenantLimits(db);
  const used = await resourcesInUse(db);
  const heldForOthers = zero();
  let reserved: Reserved | null = null;
  for (const [name, l] of limits) {
    const r: Reserved = { cpus: l.reservedCpus, memoryMiB: l.reservedMemoryMiB, storageBytes: l.reservedStorageBytes };
    if (name === tenant) {
      if (Dimensions.some((d) => r[d] !== null)) reserved = r;
      continue;
    }
    const u = used.get(name) ?? zero();
    for (const d of Dimensions) heldForOthers[d] += Math.max(0, (r[d] ?? 0) - u[d]);
  }
  return { reserved, inUse: used.get(tenant) ?? zero(), heldForOthers };
}

/**
 * The two rules for a failover needing `need`, with `poolFree` free on the hosts it may use. Returns
 * what it breaks, in words (empty: nothing).
 */
export function reservationProblems(tenant: string, need: Resources, p: ReservationPicture, poolFree: Resources): string[] {
  const out: string[] = [];
  for (const d of Dimensions) {
    const limit = p.reserved?.[d] ?? null;
    if (limit !== null && p.inUse[d] + need[d] > limit) {
      out.push(`tenant ${tenant}'s hardware plan reserves ${show(d, limit)}; ${show(d, p.inUse[d])} in use and ${show(d, need[d])} more would exceed it`);
    }
  }
  for (const d of Dimensions) {
    const ownLeft = Math.max(0, (p.reserved?.[d] ?? 0) - p.inUse[d]);
    const beyond = Math.max(0, need[d] - ownLeft);
    const unreserved = Math.max(0, poolFree[d] - p.heldForOthers[d]);
    // Only the others' reservations are this rule's business: a need the free capacity cannot meet
    // at all is placement's refusal (no host has room), with its own words.
    if (p.heldForOthers[d] > 0 && beyond > unreserved && beyond <= poolFree[d]) {
      out.push(`${show(d, beyond)} beyond tenant ${tenant}'s own reservation would take capacity reserved for other tenants (${show(d, unreserved)} free and unreserved)`);
    }
  }
  return out;
}
