/**
 * The VM status document (agent protocol §5.3), shared by the agent endpoint and the operator API.
 * Health as Hyper-V reports it: critical when a disk needs resynchronization; warning when more than
 * 20% of the last hour's cycles were missed or nothing was applied for over an hour; normal otherwise.
 */
import type { Queryable } from '../catalog/db.js';
import { pendingByDisk } from '../catalog/logs.js';
import type { DiskRow, VmRow } from '../catalog/vms.js';
import { listDisks } from '../catalog/vms.js';

export const WarningAfterMs = 3_600_000;
export const MaxMissedShare = 0.2;
const HourMs = 3_600_000;
const frequencyName: Record<number, string> = { 30: '30s', 300: '5m', 900: '15m' };
export const stateRank = ['replicating', 'initial_in_progress', 'initial_required', 'resync_required'] as const;

export type Health = 'normal' | 'warning' | 'critical';

export async function vmStatus(db: Queryable, vm: VmRow, now = new Date()) {
  const disks = await listDisks(db, vm.tenant, vm.name);
  const pending = await pendingByDisk(db, vm.tenant, vm.name);
  const bases = await pendingBases(db, vm.tenant, vm.name);
  const lastAppliedAt = latest(disks.map((d) => d.lastAppliedAt));
  const stats = await hourStats(db, vm, disks, now);
  const worst = disks.reduce((w, d) => Math.max(w, stateRank.indexOf(d.state)), 0);
  const state = vm.protected ? stateRank[worst]! : 'unprotected';
  return {
    vm: vm.name,
    tenant: vm.tenant,
    displayName: vm.displayName,
    state,
    health: computeHealth({ protected: vm.protected, resync: disks.some((d) => d.state === 'resync_required'), since: lastAppliedAt ?? vm.createdAt, now, ...stats.cycles }),
    cycles: stats.cycles,
    logBytes: stats.logBytes,
    lastError: disks.find((d) => d.resyncReason !== null)?.resyncReason ?? stats.lastError,
    frequency: frequencyName[vm.frequencySeconds] ?? `${vm.frequencySeconds}s`,
    history: vm.history,
    appConsistentEvery: vm.appConsistentEvery,
    compression: vm.compression,
    lastAppliedAt: lastAppliedAt?.toISOString() ?? null,
    pendingLogs: [...pending.values()].reduce((n, p) => n + p.logs, 0),
    pendingBytes: [...pending.values()].reduce((n, p) => n + p.bytes, 0),
    disks: disks.map((d) => diskStatus(d, pending.get(d.id), bases.get(d.id))),
  };
}

/** Per disk, the newest complete base the merge worker has yet to apply. */
async function pendingBases(db: Queryable, tenant: string, vm: string): Promise<Map<string, number>> {
  const rows = await db.query<{ disk: string; generation: number }>(
    `SELECT disk, max(generation)::int8 AS generation FROM bases WHERE tenant = $1 AND vm = $2 AND status = 'pending' GROUP BY disk`, [tenant, vm]);
  return new Map(rows.map((r) => [r.disk, Number(r.generation)]));
}

/**
 * expect names what the service applies next: logs from 1 of a complete base still waiting for the
 * merge worker (the agent's base was received: it must not send another), else the applied state's.
 */
function diskStatus(d: DiskRow, pending: { logs: number; bytes: number } | undefined, pendingBase: number | undefined) {
  const baseWaiting = pendingBase !== undefined && pendingBase > d.generation;
  const action = baseWaiting ? 'logs' : d.state === 'resync_required' ? 'resync' : d.baseComplete ? 'logs' : 'initial';
  const expect = baseWaiting ? { action, generation: pendingBase, nextSequence: 1 } : { action, generation: d.generation, nextSequence: d.appliedSequence + 1 };
  return {
    id: d.id,
    virtualSize: d.virtualSize,
    state: d.state,
    resyncReason: d.resyncReason,
    generation: d.generation,
    baseComplete: d.baseComplete,
    appliedSequence: d.appliedSequence,
    nextSequence: d.appliedSequence + 1,
    pendingLogs: pending?.logs ?? 0,
    pendingBytes: pending?.bytes ?? 0,
    lastAppliedAt: d.lastAppliedAt?.toISOString() ?? null,
    expect,
  };
}

export interface HealthInput {
  protected: boolean;
  resync: boolean;
  /** When something was last applied (or the VM registered). */
  since: Date;
  now: Date;
  expected: number;
  missed: number;
}

export function computeHealth(h: HealthInput): Health {
  if (!h.protected) return 'normal';
  if (h.resync) return 'critical';
  if (h.now.getTime() - h.since.getTime() > WarningAfterMs) return 'warning';
  if (h.expected > 0 && h.missed / h.expected > MaxMissedShare) return 'warning';
  return 'normal';
}

/**
 * A LATERAL subquery (alias h) giving, for one disk's generation, its logs received since \`from\`
 * (\`received\`) and when the generation began (\`began\`: its first chunk's or log's commit), in
 * index probes instead of reading the hour's rows. A generation's logs are numbered without gaps and
 * closed in order (the agent's sequence; the merge applies nothing past a gap), so the hour's logs
 * are the span from the first closed since \`from\` (index logs_closed, migration 022) to the
 * generation's last (the primary key). When that first log is not the generation's first, the
 * generation began before \`from\` and its start is not looked up (hourCycles counts from \`from\`).
 * A dashboard of 1,000 VMs at 30 s reads two or three probes per disk instead of 120 rows
 * (bench/portal.ts). The arguments are SQL expressions naming the disk's tenant, vm, id, generation
 * and the instant.
 */
export function hourSpanSql(tenant: string, vm: string, disk: string, generation: string, from: string): string {
  const own = (kind: string) => `tenant = ${tenant} AND vm = ${vm} AND disk = ${disk} AND kind = '${kind}' AND generation = ${generation}`;
  return `LATERAL (SELECT COALESCE(a.last - a.first + 1, 0)::int8 AS received,
      CASE WHEN a.first > 1 THEN ${from}::timestamptz ELSE LEAST(
        (SELECT committed_at FROM logs WHERE ${own('chunk')} ORDER BY sequence LIMIT 1),
        (SELECT committed_at FROM logs WHERE ${own('log')} ORDER BY sequence LIMIT 1)) END AS began
    FROM (SELECT (SELECT sequence FROM logs WHERE ${own('log')} AND created_at > ${from} ORDER BY created_at, sequence LIMIT 1) AS first,
                 (SELECT sequence FROM logs WHERE ${own('log')} ORDER BY sequence DESC LIMIT 1) AS last) a) h`;
}

/**
 * The last hour of the VM over all its disks that have a complete base. Each cycle ships one log per
 * disk, so a VM cycle is successful only when every disk's log of it arrived: per disk, the cycles
 * expected from the frequency since replication of its current generation began (at most an hour
 * back) and the logs of that generation received; the VM expects as many cycles as its longest
 * replicating disk and has as many successful ones as its disk with the fewest logs. Log sizes are
 * every disk's logs of the hour; the error is the last refused log's, of any disk.
 */
async function hourStats(db: Queryable, vm: VmRow, disks: DiskRow[], now: Date) {
  const counted = disks.filter((d) => d.baseComplete);
  const from = new Date(now.getTime() - HourMs);
  const rows = await db.query<{ avg: number | null; max: number | null; err: string | null }>(
    `SELECT (SELECT avg(size)::float8 FROM logs WHERE tenant = $1 AND vm = $2 AND kind = 'log' AND created_at > $3) AS avg,
            (SELECT max(size) FROM logs WHERE tenant = $1 AND vm = $2 AND kind = 'log' AND created_at > $3)::int8 AS max,
            (SELECT error FROM logs WHERE tenant = $1 AND vm = $2 AND status = 'rejected' ORDER BY committed_at DESC LIMIT 1) AS err`,
    [vm.tenant, vm.name, from]);
  const r = rows[0]!;
  const perDisk: { began: Date | string | null; received: number }[] = [];
  for (const d of counted) {
    // Index lookups only: the logs of the disk's generation received in the hour, and when the
    // generation began (its first chunk or log).
    const row = (await db.query<{ n: number; began: Date | null }>(
      `SELECT h.received AS n, h.began FROM ${hourSpanSql('$1', '$2', '$3', '$4', '$5')}`,
      [vm.tenant, vm.name, d.id, d.generation, from]))[0]!;
    perDisk.push({ began: row.began, received: Number(row.n) });
  }
  return {
    cycles: hourCycles(perDisk, vm.frequencySeconds, now),
    logBytes: { average: Math.round(r.avg ?? 0), largest: Number(r.max ?? 0) },
    lastError: r.err,
  };
}

/**
 * The VM's cycles of the last hour from its replicating disks' (those with a complete base): when
 * each disk's generation began and how many of its logs arrived in the hour. The VM expects as many
 * cycles as its longest replicating disk and has as many successful ones as its disk with the fewest.
 */
export function hourCycles(disks: { began: Date | string | null; received: number }[], frequencySeconds: number, now: Date) {
  const from = now.getTime() - HourMs;
  let expected = 0;
  let successful = Infinity;
  for (const d of disks) {
    const start = Math.max(from, d.began ? new Date(d.began).getTime() : now.getTime());
    expected = Math.max(expected, Math.floor((now.getTime() - start) / (frequencySeconds * 1000)));
    successful = Math.min(successful, d.received);
  }
  successful = Math.min(expected, disks.length === 0 ? 0 : successful);
  return { expected, successful, missed: expected - successful };
}

function latest(dates: (Date | null)[]): Date | undefined {
  let best: Date | undefined;
  for (const d of dates) if (d && (!best || d > best)) best = d;
  return best;
}
