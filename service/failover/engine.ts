/**
 * The failover engine's front: what the API and CLI ask of it. A request is checked and recorded
 * (the catalog row is the authority), placed on a failover host, and handed to that host's queue;
 * the host's job (job.ts) does the work step by step. Every transition is refused with a clear error
 * naming the state when it does not apply (commit a test failover, a second real failover of one VM,
 * a point that does not exist); a VM of another tenant is answered as if it did not exist.
 *
 * A real failover (planned, unplanned) is never refused for the state of replication: it goes ahead
 * from the newest complete point with a warning. Only test failovers are refused on those grounds.
 */
import { randomUUID } from 'node:crypto';
import type { Queryable } from '../catalog/db.js';
import type { FailoverGoal, FailoverHostRow, FailoverKind, FailoverRow } from '../catalog/failovers.js';
import {
  findByIdempotencyKey, getFailover, getVmHardware, hostUsage, insertFailover, listHosts, listVmNics, setFailoverGoal, sourceAddresses,
} from '../catalog/failovers.js';
import { addStep } from './steps.js';
import type { NetworkRow } from '../catalog/networks.js';
import { listNetworks } from '../catalog/networks.js';
import { getVm, listDisks } from '../catalog/vms.js';
import { getTenant } from '../catalog/tenants.js';
import type { ServiceContext } from '../context.js';
import { ErrConflict, ErrNotFoundHere } from '../errors.js';
import { LifeboatError } from '../../shared/errors.js';
import { formatBytes } from '../../shared/units.js';
import type { DiskBus, NicModel } from './drivers/types.js';
import type { NicPlan } from './network/mappings.js';
import type { FailoverQueues } from './queue.js';
import { planVmIp } from './seed.js';
import { checkTestFailoverQuota } from '../usage/quotas.js';
import { reservationPicture, reservationProblems } from '../usage/reservations.js';
import { emitEvent } from '../events/emit.js';
import { defaultHardware } from './spec.js';
import type { FailoverSpec } from './spec.js';

/** A host whose heartbeat is older than this is not offered new failovers. */
export const HostStaleMs = 60_000;

export interface FailoverRequest {
  tenant: string;
  vm: string;
  kind: FailoverKind;
  /** 'latest' (cut on demand at the newest cycle every disk applied), 'latest-consistent', or a point id. */
  point: string;
  idempotencyKey?: string | undefined;
  requestedBy: string;
  /** A recovery plan's run: the failover's id reserved by it, the run's id, and (planned) the point its cut fixed at the final cycle. */
  id?: string | undefined;
  planRunId?: string | undefined;
  plannedPointId?: number | undefined;
}

/** States in which each user action applies. */
const Live = new Set(['requested', 'preparing', 'booting', 'ready', 'running', 'committing', 'committed']);

export async function requestFailover(ctx: ServiceContext, queues: FailoverQueues, req: FailoverRequest): Promise<{ failover: FailoverRow; repeated: boolean }> {
  const { db } = ctx;
  if (req.idempotencyKey !== undefined) {
    const first = await findByIdempotencyKey(db, req.tenant, req.idempotencyKey);
    if (first) {
      if (first.vm !== req.vm || first.kind !== req.kind) throw ErrConflict('idempotency_key_reused', `Idempotency-Key ${req.idempotencyKey} was used for another request (failover ${first.id} of ${first.vm})`);
      return { failover: first, repeated: true };
    }
  }
  const vm = await getVm(db, req.tenant, req.vm);
  if (!vm) throw ErrNotFoundHere(`tenant ${req.tenant} has no VM ${req.vm}`);
  const disks = await listDisks(db, req.tenant, req.vm);
  if (disks.length === 0 || disks.some((d) => !d.baseComplete)) {
    throw ErrConflict('no_replica', `VM ${req.vm} has no complete replica yet (its initial copy has not been applied), so there is nothing to fail over to`);
  }
  const warnings: string[] = [];
  const unhealthy = disks.filter((d) => d.state !== 'replicating');
  if (unhealthy.length > 0) {
    const what = unhealthy.map((d) => `${d.id}: ${d.state}${d.resyncReason ? ` (${d.resyncReason})` : ''}`).join(', ');
    if (req.kind === 'test') throw ErrConflict('replication_unhealthy', `a test failover of ${req.vm} is refused while its replication is not healthy (${what}); a real failover would go ahead from the newest complete point`);
    warnings.push(`replication was not healthy at the request (${what}); the failover uses the newest complete point`);
  }
  if (req.kind !== 'test') {
    const live = await db.query<{ id: string; state: string }>(`SELECT id, state FROM failovers WHERE tenant = $1 AND vm = $2 AND kind <> 'test' AND ended_at IS NULL`, [req.tenant, req.vm]);
    if (live[0]) throw ErrConflict('already_failed_over', `VM ${req.vm} already has ${req.kind === 'unplanned' ? 'a' : 'a real'} failover ${live[0].id} in state ${live[0].state}; commit or revert it first`);
  }
  // A planned failover starts from the final cycle the agent ships after shutting the VM down.
  // (A plan run's planned failover was shut down by the run, which fixed its point at the final cycle.)
  const pointId = req.kind === 'planned' ? req.plannedPointId ?? null : await checkPointRequest(db, req.tenant, req.vm, req.point);
  // The IP plan is resolved now: a conflict (a mapped address colliding with an explicit one) is
  // refused before the failover, not discovered during it.
  const plan = await planVmIp(db, req.tenant, req.vm, req.kind === 'test' ? 'test' : 'production');
  const spec = await specOf(ctx, req.tenant, req.vm, disks.map((d) => d.id));
  if (req.kind === 'test') await checkTestFailoverQuota(db, req.tenant);
  const placed = await place(db, {
    tenant: req.tenant, vm: req.vm, cpus: spec.hardware.cpus, memoryMiB: spec.hardware.memoryMiB,
    storageBytes: disks.reduce((sum, d) => sum + Number(d.virtualSize), 0), networks: nicNetworks(plan), kind: req.kind,
  });
  const host = placed.host;
  warnings.push(...placed.warnings);
  const id = req.id ?? newFailoverId();
  const maxHours = (await getTenant(db, req.tenant))?.testFailoverMaxHours ?? ctx.config.failover.testMaxHours;
  const expiresAt = req.kind === 'test' ? new Date(Date.now() + maxHours * 3_600_000) : null;
  let failover: FailoverRow;
  try {
    failover = await db.transaction(async (tx) => {
      const row = await insertFailover(tx, {
        id, tenant: req.tenant, vm: req.vm, kind: req.kind, pointRequest: req.point, pointId, host, vmGenerationId: randomUUID(),
        spec: spec as unknown as Record<string, unknown>, warnings, idempotencyKey: req.idempotencyKey ?? null, requestedBy: req.requestedBy, expiresAt,
        planRunId: req.planRunId ?? null,
      });
      await addStep(tx, id, 'requested', 'done', `${req.kind} failover from point ${req.point} placed on host ${host}`, req.requestedBy);
      // A real failover past its tenant's hardware plan goes ahead; the event says what it exceeded.
      if (placed.warnings.length > 0) await emitEvent(tx, { type: 'quota.reached', tenant: req.tenant, data: { quota: 'hardwarePlan', failover: id, vm: req.vm, exceeded: placed.warnings } });
      return row;
    });
  } catch (err) {
    // Two requests raced past the check above: the unique index keeps one real failover per VM.
    if ((err as { code?: string }).code === '23505') throw ErrConflict('already_failed_over', `VM ${req.vm} already has a live real failover`);
    throw err;
  }
  await queues.enqueue(failover);
  return { failover, repeated: false };
}

/** Asks a failover to go to a goal: stop (test), commit or revert (real). */
export async function changeGoal(ctx: ServiceContext, queues: FailoverQueues, tenant: string | undefined, id: string, goal: Exclude<FailoverGoal, 'ready'>, by: string): Promise<FailoverRow> {
  const { db } = ctx;
  const f = await getFailover(db, id);
  if (!f || (tenant !== undefined && f.tenant !== tenant)) throw ErrNotFoundHere(`no failover ${id}`);
  const action = goal === 'stopped' ? 'stop' : goal === 'committed' ? 'commit' : 'revert';
  if (goal === 'stopped' && f.kind !== 'test') throw ErrConflict('wrong_kind', `failover ${id} is ${f.kind}: stop ends test failovers; commit or revert it`);
  if (goal !== 'stopped' && f.kind === 'test') throw ErrConflict('wrong_kind', `failover ${id} is a test failover: it can only be stopped, not ${action === 'commit' ? 'committed' : 'reverted'}`);
  if (f.endedAt || !Live.has(f.state)) throw ErrConflict('ended', `failover ${id} is ${f.state}; there is nothing to ${action}`);
  if (f.goal === goal) return f;
  if (goal === 'committed' && f.state === 'committed') return f;
  if (goal === 'reverted' && (f.state === 'committed' || f.state === 'committing')) throw ErrConflict('committed', `failover ${id} is ${f.state}: a committed failover keeps what it wrote and cannot be reverted (fail back instead)`);
  if (goal === 'committed' && f.goal === 'reverted') throw ErrConflict('reverting', `failover ${id} is being reverted`);
  await db.transaction(async (tx) => {
    await setFailoverGoal(tx, id, goal);
    await addStep(tx, id, `${action} requested`, 'done', undefined, by);
  });
  const updated = (await getFailover(db, id))!;
  await queues.enqueue(updated);
  return updated;
}

/** The point id a request names, checked now (not at prepare) so a bad one changes nothing. */
async function checkPointRequest(db: Queryable, tenant: string, vm: string, point: string): Promise<number | null> {
  if (point === 'latest') return null;
  if (point === 'latest-consistent') {
    const rows = await db.query<{ id: number }>(`SELECT id FROM recovery_points WHERE tenant = $1 AND vm = $2 AND consistency = 'application' ORDER BY created_at DESC LIMIT 1`, [tenant, vm]);
    if (!rows[0]) throw ErrConflict('no_consistent_point', `VM ${vm} has no application-consistent recovery point`);
    return Number(rows[0].id);
  }
  if (!/^\d{1,18}$/.test(point)) throw new LifeboatError('invalid_argument', `point must be latest, latest-consistent or a point id, not ${JSON.stringify(point.slice(0, 40))}`);
  const rows = await db.query<{ id: number }>('SELECT id FROM recovery_points WHERE tenant = $1 AND vm = $2 AND id = $3', [tenant, vm, Number(point)]);
  if (!rows[0]) throw ErrNotFoundHere(`VM ${vm} has no recovery point ${point} (it may have been pruned)`);
  return Number(rows[0].id);
}

/** The hardware and NICs the failed-over VM gets, frozen at the request. */
export async function specOf(ctx: ServiceContext, tenant: string, vm: string, diskIds: string[]): Promise<FailoverSpec> {
  const hw = (await getVmHardware(ctx.db, tenant, vm)) ?? defaultHardware();
  const order = (id: string) => hw.disks[id]?.order ?? Number.MAX_SAFE_INTEGER;
  const disks = [...diskIds].sort((a, b) => order(a) - order(b) || a.localeCompare(b)).map((id) => ({ id, bus: (hw.disks[id]?.bus ?? (hw.guestOs === 'windows' ? 'sata' : 'virtio')) as DiskBus }));
  const nics = (await listVmNics(ctx.db, tenant, vm)).map((n) => ({ mac: n.mac, model: n.model as NicModel, settings: n.settings, reportedAddresses: sourceAddresses(n) }));
  return {
    hardware: { firmware: hw.firmware, secureBoot: hw.secureBoot, cpus: hw.cpus, memoryMiB: hw.memoryMiB, guestOs: hw.guestOs },
    disks, nics, readyProbes: hw.readyProbes as FailoverSpec['readyProbes'],
  };
}

/** What a failover needs of the host it is placed on. */
export interface PlacementNeeds {
  tenant: string;
  vm: string;
  cpus: number;
  memoryMiB: number;
  /** The most its overlays can come to hold: the virtual size of its disks (a commit copies them whole). */
  storageBytes: number;
  /** The DR networks its NICs attach to, each with the NICs that name it. */
  networks: Map<string, string[]>;
  /** A test failover is held to the hardware plans; a real one only warned. */
  kind: FailoverKind;
}

/**
 * The DR networks a failover's NICs attach to: the network each NIC's plan for the failover's kind
 * names (production settings for a real failover, test settings for a test one). A NIC that names
 * none goes on an isolated network, which every host can make.
 */
export function nicNetworks(plan: readonly NicPlan[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const p of plan) {
    if (p.config.network !== undefined) out.set(p.config.network, [...(out.get(p.config.network) ?? []), p.mac]);
  }
  return out;
}

/**
 * Whether a host reaches a DR network: the network's host list names it (an empty list: every host)
 * and the host's own registered networks name the network (none registered: no limit of its own).
 * The first half is what the prepare step checks, so a host chosen here is never refused there.
 */
export function hostReaches(host: Pick<FailoverHostRow, 'name' | 'networks'>, net: Pick<NetworkRow, 'name' | 'hosts'>): boolean {
  return (net.hosts.length === 0 || net.hosts.includes(host.name)) && (host.networks.length === 0 || host.networks.includes(net.name));
}

/**
 * Placement: among the live hosts (recent heartbeat) that reach every DR network the failover's NICs
 * attach to, the one with the most free memory that has room for its vCPUs, memory and overlay
 * storage beside the failovers already placed on it. A refusal names the requirement no host met:
 * a network (and the hosts that are live), or the room (and what each host has free).
 */
export async function place(db: Queryable, needs: PlacementNeeds): Promise<{ host: string; warnings: string[] }> {
  const hosts = await liveHosts(db);
  if (hosts.length === 0) throw new LifeboatError('unavailable', 'no failover host is running (serve runs one unless failover.embeddedHost is false; else start lifeboat-service failover-host)');
  const nets: NetworkRow[] = [];
  if (needs.networks.size > 0) {
    const granted = new Map((await listNetworks(db, needs.tenant)).map((n) => [n.name, n]));
    for (const [name, macs] of needs.networks) {
      const net = granted.get(name);
      if (!net) throw ErrConflict('network_not_granted', `VM ${needs.vm} NIC ${macs.join(', ')}: DR network ${name} is not granted to tenant ${needs.tenant}`);
      nets.push(net);
    }
  }
  const reaching = hosts.filter((h) => nets.every((n) => hostReaches(h, n)));
  if (reaching.length === 0) throw new LifeboatError('unavailable', unreachedMessage(hosts, nets));
  const room = await hostRoom(db, reaching);
  // The hardware plans: a test failover within them or refused; a real one goes ahead, saying what it broke.
  const poolFree = room.reduce((sum, x) => ({ cpus: sum.cpus + Math.max(0, x.cpus), memoryMiB: sum.memoryMiB + Math.max(0, x.memoryMiB), storageBytes: sum.storageBytes + Math.max(0, x.storage) }),
    { cpus: 0, memoryMiB: 0, storageBytes: 0 });
  const problems = reservationProblems(needs.tenant, needs, await reservationPicture(db, needs.tenant), poolFree);
  if (problems.length > 0 && needs.kind === 'test') throw ErrConflict('reservation_exceeded', `a test failover of ${needs.vm} is refused: ${problems.join('; ')}`);
  const warnings = problems.map((p) => `${p}; a ${needs.kind} failover goes ahead where a host has room`);
  const fits = room.filter((x) => x.cpus >= needs.cpus && x.memoryMiB >= needs.memoryMiB && x.storage >= needs.storageBytes);
  if (fits.length === 0) {
    const scope = nets.length > 0 ? ` that reaches ${nets.map((n) => n.name).join(' and ')}` : '';
    const storageShort = room.some((x) => x.storage < needs.storageBytes);
    const computeShort = room.some((x) => x.cpus < needs.cpus || x.memoryMiB < needs.memoryMiB);
    const free = (x: (typeof room)[number]) => [
      ...(computeShort ? [`${x.cpus} of ${x.h.cpus} vCPUs, ${x.memoryMiB} of ${x.h.memoryMiB} MiB`] : []),
      ...(storageShort ? [`${formatBytes(Math.max(0, x.storage))} of ${formatBytes(Number(x.h.storageBytes))} overlay storage`] : []),
    ].join(', ');
    const what = [
      ...(computeShort ? [`${needs.cpus} vCPUs and ${needs.memoryMiB} MiB`] : []),
      ...(storageShort ? [`${formatBytes(needs.storageBytes)} of overlay storage (the virtual size of the VM's disks)`] : []),
    ].join(' and ');
    throw new LifeboatError('unavailable', `no failover host${scope} has room for ${what} beside the failovers already placed on it (free: ${room.map((x) => `${x.h.name}: ${free(x)}`).join('; ')})`);
  }
  fits.sort((a, b) => b.memoryMiB - a.memoryMiB || a.h.name.localeCompare(b.h.name));
  return { host: fits[0]!.h.name, warnings };
}

/** The failover hosts with a recent heartbeat. */
export async function liveHosts(db: Queryable): Promise<FailoverHostRow[]> {
  return (await listHosts(db)).filter((h) => Date.now() - new Date(h.heartbeatAt).getTime() < HostStaleMs);
}

/** What each host has free beside the failovers already placed on it (negative: over-committed). */
export async function hostRoom(db: Queryable, hosts: FailoverHostRow[]): Promise<{ h: FailoverHostRow; cpus: number; memoryMiB: number; storage: number }[]> {
  const usage = await hostUsage(db);
  const overlays = await overlayUsage(db);
  return hosts.map((h) => {
    const used = usage.get(h.name) ?? { cpus: 0, memoryMiB: 0, count: 0 };
    return { h, cpus: h.cpus - used.cpus, memoryMiB: Number(h.memoryMiB) - used.memoryMiB, storage: Number(h.storageBytes) - (overlays.get(h.name) ?? 0) };
  });
}

/** The refusal when no live host reaches every network: the first network none reaches, else the split. */
function unreachedMessage(hosts: FailoverHostRow[], nets: NetworkRow[]): string {
  const names = hosts.map((h) => h.name).join(', ');
  const alone = nets.find((n) => !hosts.some((h) => hostReaches(h, n)));
  if (alone) {
    const carriers = alone.hosts.length > 0 ? `; the network names host${alone.hosts.length > 1 ? 's' : ''} ${alone.hosts.join(', ')}` : '; no live host registered it';
    return `no failover host reaches network ${alone.name} (live hosts: ${names}${carriers})`;
  }
  const each = hosts.map((h) => `${h.name} reaches ${nets.filter((n) => hostReaches(h, n)).map((n) => n.name).join(', ') || 'none of them'}`).join('; ');
  return `no failover host reaches every network the VM's NICs attach to (${nets.map((n) => n.name).join(', ')}): ${each}`;
}

/** Overlay storage reserved on each host: the virtual size of the disks of its live failovers. */
async function overlayUsage(db: Queryable): Promise<Map<string, number>> {
  const rows = await db.query<{ host: string; bytes: string }>(`SELECT f.host, coalesce(sum(d.virtual_size), 0)::bigint AS bytes FROM failovers f
    JOIN disks d ON d.tenant = f.tenant AND d.vm = f.vm AND f.spec->'disks' @> jsonb_build_array(jsonb_build_object('id', d.id))
    WHERE f.ended_at IS NULL AND f.host IS NOT NULL GROUP BY f.host`);
  return new Map(rows.map((r) => [r.host, Number(r.bytes)]));
}

/** Short, URL- and path-safe, sortable by time: fo-<ms base36>-<random>. */
export function newFailoverId(): string {
  return `fo-${Date.now().toString(36)}-${randomUUID().slice(0, 8)}`;
}
