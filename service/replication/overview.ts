/**
 * A tenant's replication at a glance, for the portal's dashboard: every VM with its health (the
 * rule of status.ts, as Hyper-V shows it), state, last applied time, pending logs and bytes and its
 * live failovers, read in ONE catalog query however many VMs there are, so a page refreshing it
 * costs one query per refresh.
 */
import type { Queryable } from '../catalog/db.js';
import type { DiskState } from '../catalog/vms.js';
import type { Health } from './status.js';
import { computeHealth, hourCycles, hourSpanSql, stateRank } from './status.js';

const HourMs = 3_600_000;

export interface VmOverview {
  name: string;
  displayName: string | null;
  health: Health;
  /** replicating, initial_in_progress, initial_required, resync_required, unprotected, in test failover, failed over. */
  state: string;
  lastAppliedAt: string | null;
  pendingLogs: number;
  pendingBytes: number;
  cycles: { expected: number; successful: number; missed: number };
  failovers: { id: string; kind: string; state: string }[];
}

interface Row {
  name: string;
  displayName: string | null;
  protected: boolean;
  frequencySeconds: number;
  createdAt: Date;
  disks: { state: DiskState; baseComplete: boolean; lastAppliedAt: string | null; began: string | null; received: number }[] | null;
  pendingLogs: number;
  pendingBytes: number;
  failovers: { id: string; kind: string; state: string }[] | null;
}

// Per disk: its state, and for the hour's cycles when its generation began (first chunk or log) and
// its logs of that generation received in the hour, in index probes as status.ts reads them.
const OverviewSql = `
SELECT v.name, v.display_name AS "displayName", v.protected, v.frequency_seconds AS "frequencySeconds", v.created_at AS "createdAt",
  d.list AS disks, COALESCE(p.logs, 0)::int8 AS "pendingLogs", COALESCE(p.bytes, 0)::int8 AS "pendingBytes", f.list AS failovers
FROM vms v
LEFT JOIN LATERAL (
  SELECT json_agg(json_build_object('state', k.state, 'baseComplete', k.base_complete, 'lastAppliedAt', k.last_applied_at,
    'received', h.received, 'began', h.began) ORDER BY k.id) AS list
  FROM disks k, ${hourSpanSql('k.tenant', 'k.vm', 'k.id', 'k.generation', '$2')} WHERE k.tenant = v.tenant AND k.vm = v.name) d ON true
LEFT JOIN LATERAL (
  SELECT count(*) AS logs, sum(size) AS bytes FROM logs l WHERE l.tenant = v.tenant AND l.vm = v.name AND l.kind = 'log' AND l.status = 'pending') p ON true
LEFT JOIN LATERAL (
  SELECT json_agg(json_build_object('id', x.id, 'kind', x.kind, 'state', x.state) ORDER BY x.requested_at, x.id) AS list
  FROM failovers x WHERE x.tenant = v.tenant AND x.vm = v.name AND x.ended_at IS NULL) f ON true
WHERE v.tenant = $1
ORDER BY v.name`;

/** Every VM of the tenant, by name, in one query. */
export async function tenantOverview(db: Queryable, tenant: string, now = new Date()): Promise<VmOverview[]> {
  const rows = await db.query<Row>(OverviewSql, [tenant, new Date(now.getTime() - HourMs)]);
  return rows.map((r) => {
    const disks = r.disks ?? [];
    const failovers = (r.failovers ?? []).map((f) => ({ id: String(f.id), kind: f.kind, state: f.state }));
    const lastAppliedAt = disks.reduce<string | null>((m, d) => (d.lastAppliedAt && (!m || new Date(d.lastAppliedAt) > new Date(m)) ? d.lastAppliedAt : m), null);
    const cycles = hourCycles(disks.filter((d) => d.baseComplete).map((d) => ({ began: d.began, received: Number(d.received) })), r.frequencySeconds, now);
    const worst = disks.reduce((w, d) => Math.max(w, stateRank.indexOf(d.state)), 0);
    // As the operator API's VM list: a live real failover makes the hoster's copy the primary.
    const real = failovers.find((f) => f.kind !== 'test');
    const test = failovers.find((f) => f.kind === 'test');
    const state = real ? 'failed over' : test ? 'in test failover' : r.protected ? stateRank[worst]! : 'unprotected';
    return {
      name: r.name, displayName: r.displayName, state,
      health: computeHealth({ protected: r.protected, resync: disks.some((d) => d.state === 'resync_required'), since: lastAppliedAt ? new Date(lastAppliedAt) : new Date(r.createdAt), now, ...cycles }),
      lastAppliedAt: lastAppliedAt ? new Date(lastAppliedAt).toISOString() : null,
      pendingLogs: Number(r.pendingLogs), pendingBytes: Number(r.pendingBytes), cycles, failovers,
    };
  });
}
