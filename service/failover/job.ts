/**
 * Job `failover` (queue failover-<host>, one job per failover, run by the host that owns it).
 *
 * Input: a failover id. The job reads the failover's row and moves its state toward its goal, one
 * step at a time, until the state is stable for the goal (ready or running for goal ready, committed,
 * or ended), then returns. Each step's row is written before its side effect and every step is
 * idempotent, so a killed host or worker resumes on retry: a prepared VM is prepared again without
 * harm, a started qemu is left running, a stopped one is not stopped twice.
 *
 * Steps: prepare (pick the point: cut on demand for latest; pin it under every disk's lock; record
 * the fork; the seeds, made meanwhile; overlays) → start (qemu, then its public addresses: public-ips.ts) → wait-ready
 * (probes; screenshot) → commit (block-stream, exports closed, point released) or stop/revert (public
 * addresses removed, qemu ended, overlays deleted, exports closed, point released). Output: the
 * row's state, steps, screenshot and timestamps.
 * Failure codes: any step that fails marks the failover failed with its reason (qemu's log when qemu
 * died), then the teardown runs, so a failed failover leaves nothing behind.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { userMessage } from '../../shared/errors.js';
import type { FailoverRow, ForkedDisk } from '../catalog/failovers.js';
import { getFailover, saveScreenshot, setFailoverState } from '../catalog/failovers.js';
import { addStep } from './steps.js';
import { getNetwork, listNetworks } from '../catalog/networks.js';
import { awaitFinalCycle, cancelFinalCycle } from '../commands/planned.js';
import { pinPoint, unpinPoint } from '../catalog/pins.js';
import { getVm, listDisks } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import { mergeJobId } from '../queue.js';
import { readState } from '../replication/replica.js';
import type { CutPointResult } from '../workers/cut-point.js';
import { cutPoint } from '../workers/cut-point.js';
import type { DiskLock } from '../workers/lock.js';
import { acquireLock } from '../workers/lock.js';
import type { FailoverDriver, FailoverNic, GuestNetworkReport, ReadyProbe } from './drivers/types.js';
import { exportName } from './exports.js';
import type { NicPlan } from './network/mappings.js';
import { compareIntent, parseGuestAgentInterfaces, parseGuestNetwork } from './network/readback.js';
import { applyPublicIps, removePublicIps } from './public-ips.js';
import { NetworkPlanFile, networkInputs, writeSeeds } from './seed.js';
import type { FailoverSpec } from './spec.js';
import { vmNvramPath } from './spec.js';

/** How long a latest point waits for every disk to reach one cycle. */
export const CutPointTimeoutMs = 120_000;
/** How long read-back waits for the guest's console report after ready, asked in slices. */
const ReadBackWaitMs = 10 * 60_000;
const ReadBackSliceMs = 5000;
/** waitReady is asked in slices this long, so a stop asked during boot is seen. */
const ReadySliceMs = 3000;

export interface HostRuntime {
  ctx: ServiceContext;
  redis: Redis;
  hostName: string;
  /** The host's directory; each failover works in vms/<id>/. */
  dir: string;
  nbdSocket: string;
  driver: FailoverDriver;
  /** Closes an export's connections and its image (the NBD server's dropExport). */
  dropExport(name: string): Promise<void>;
  lockPrefix?: string | undefined;
  log: Logger;
}

export function workDirOf(rt: HostRuntime, id: string): string {
  return join(rt.dir, 'vms', id);
}

/** Runs the failover toward its goal; returns when it is stable or ended. */
export async function runFailoverJob(rt: HostRuntime, id: string): Promise<void> {
  for (let guard = 0; guard < 20; guard++) {
    const f = await getFailover(rt.ctx.db, id);
    if (!f || f.endedAt) return;
    const step = nextStep(f);
    if (!step) return;
    try {
      await step(rt, f);
    } catch (err) {
      // A teardown that fails is retried by the queue (backoff) and by the reconciler.
      if (step === teardown) throw err;
      const reason = reasonOf(err);
      rt.log.error({ failover: id, err }, 'failover step failed');
      await rt.ctx.db.transaction(async (tx) => {
        await addStep(tx, id, 'failed', 'failed', reason);
        await setFailoverState(tx, id, 'failed', { error: reason });
      });
    }
  }
}

type Step = (rt: HostRuntime, f: FailoverRow) => Promise<void>;

/** The next step toward the goal, or none when the state is stable for it. */
export function nextStep(f: FailoverRow): Step | undefined {
  if (f.state === 'failed') return teardown;
  if (f.goal === 'stopped' || f.goal === 'reverted') return teardown;
  switch (f.state) {
    case 'requested':
    case 'preparing':
      return prepare;
    case 'booting':
      return boot;
    case 'ready':
      return undefined;
    case 'running':
    case 'committing':
      return f.goal === 'committed' ? commit : undefined;
    default:
      return undefined;
  }
}

const prepare: Step = async (rt, f) => {
  const { db } = rt.ctx;
  await db.transaction(async (tx) => {
    await setFailoverState(tx, f.id, 'preparing', { startedAt: f.startedAt ?? new Date() });
    await addStep(tx, f.id, 'prepare', 'started');
  });
  const spec = f.spec as unknown as FailoverSpec;
  const workDir = workDirOf(rt, f.id);
  await mkdir(workDir, { recursive: true, mode: 0o700 });
  const netKind = f.kind === 'test' ? 'test' as const : 'production' as const;
  // The seeds do not depend on the point: they are made while it is cut and pinned.
  const seeding = networkInputs(db, f.tenant, f.vm, netKind).then((net) => writeSeeds(workDir, f, spec, net));
  const [picked, seeds] = await both(pointAndFork(rt, f, spec), seeding);
  if (!picked) return;
  const { pointId: pid, fork } = picked;
  const nics = await attachNics(rt, f, spec, seeds.plan);
  const vm = await getVm(db, f.tenant, f.vm);
  const nvram = vm && spec.hardware.firmware === 'uefi' ? vmNvramPath(vm) : undefined;
  const input = {
    failoverId: f.id, workDir, name: `lifeboat-${f.id}-${f.vm}`.slice(0, 60), hardware: spec.hardware, vmGenerationId: f.vmGenerationId,
    disks: fork.map((d) => ({
      id: d.disk, bus: d.bus as FailoverSpec['disks'][number]['bus'], virtualSize: d.virtualSize, nbd: { socket: rt.nbdSocket, exportName: exportName(f, pid, d.disk) },
      layerPath: join(d.replicaDir, d.layer),
    })),
    nics,
    seeds: seeds.paths,
    ...(nvram && existsSync(nvram) ? { nvramSource: nvram } : {}),
    // What the hyperv and webhook drivers take beyond the common input.
    kind: netKind, vm: f.vm, nicPlans: seeds.plan, replicaPaths: Object.fromEntries(fork.map((d) => [d.disk, join(d.replicaDir, d.layer)])),
  };
  await rt.driver.prepare(input);
  await db.transaction(async (tx) => {
    await addStep(tx, f.id, 'prepare', 'done', `point ${pid}; ${fork.length} disk(s) exported; seeds: ${seeds.describe}`);
    await setFailoverState(tx, f.id, 'booting');
  });
};

/**
 * The failover's point (cut on demand for latest; at the final cycle for a planned failover), pinned
 * under every disk's lock, and its fork; undefined when a planned failover was stopped while it
 * waited for the agent.
 */
async function pointAndFork(rt: HostRuntime, f: FailoverRow, spec: FailoverSpec): Promise<{ pointId: number; fork: ForkedDisk[] } | undefined> {
  const { db } = rt.ctx;
  let pointId = f.pointId;
  if (pointId === null && f.kind === 'planned') {
    const final = await finalCycle(rt, f);
    if (final === undefined) return undefined;
    pointId = await pointAtCycle(rt, f, final.cycle);
    await db.query('UPDATE failovers SET point_id = $2 WHERE id = $1', [f.id, pointId]);
  }
  if (pointId === null) {
    try {
      const cut = await cutPoint(rt.ctx, rt.redis, { tenant: f.tenant, vm: f.vm, timeoutMs: CutPointTimeoutMs, lockPrefix: rt.lockPrefix });
      pointId = cut.id;
      await addStep(db, f.id, 'point', 'done', `cut point ${cut.id} at cycle ${cut.cycle ?? '(v1 logs)'}, captured ${cut.capturedAt.toISOString()}`);
    } catch (err) {
      // A real failover is never refused for the state of replication: the newest complete point.
      const newest = f.kind === 'test' ? undefined : (await db.query<{ id: number }>('SELECT id FROM recovery_points WHERE tenant = $1 AND vm = $2 ORDER BY created_at DESC, id DESC LIMIT 1', [f.tenant, f.vm]))[0];
      if (!newest) throw err;
      pointId = Number(newest.id);
      const warning = `no point could be cut at the latest cycle (${reasonOf(err)}); the newest complete point ${pointId} is used`;
      await setFailoverState(db, f.id, 'preparing', { warnings: [...f.warnings, warning] });
      await addStep(db, f.id, 'point', 'done', warning);
    }
    await db.query('UPDATE failovers SET point_id = $2 WHERE id = $1', [f.id, pointId]);
  }
  const point = (await db.query<{ layer: string; cycle: number | null; capturedAt: Date | null; createdAt: Date }>(
    'SELECT layer, cycle, captured_at AS "capturedAt", created_at AS "createdAt" FROM recovery_points WHERE id = $1 AND tenant = $2 AND vm = $3', [pointId, f.tenant, f.vm]))[0];
  if (!point) throw new Error(`recovery point ${pointId} of ${f.vm} no longer exists (pruned before it could be pinned)`);
  const fork = await pinUnderLocks(rt, f, pointId, point.layer, spec);
  await setFailoverState(db, f.id, 'preparing', { pointId, cycle: point.cycle, capturedAt: point.capturedAt ?? point.createdAt, fork });
  return { pointId, fork };
}

/** Both results; when either fails, its error once both have ended (nothing of the step left running). */
async function both<A, B>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [ra, rb] = await Promise.allSettled([a, b]);
  if (ra.status === 'rejected') throw ra.reason;
  if (rb.status === 'rejected') throw rb.reason;
  return [ra.value, rb.value];
}

/** Slices in which a planned failover waits for the agent, re-reading the goal between them. */
const FinalCycleSliceMs = 3000;
/** How long the final cycle may take to be applied on every disk once the agent shipped it. */
const FinalApplyMs = 10 * 60_000;

/**
 * A planned failover's first step: the agent (over its command channel) shuts the VM down, ships a
 * final cycle and reports it. Undefined when a stop or revert was asked meanwhile (the command is
 * cancelled; the teardown follows).
 */
async function finalCycle(rt: HostRuntime, f: FailoverRow): Promise<{ cycle: number; capturedAt: string } | undefined> {
  const { db } = rt.ctx;
  await addStep(db, f.id, 'final-cycle', 'started', 'the agent shuts the VM down at the source and ships its final cycle');
  for (;;) {
    const now = await getFailover(db, f.id);
    if (!now || now.endedAt || now.goal === 'stopped' || now.goal === 'reverted') {
      await cancelFinalCycle(db, f, 'the failover was stopped');
      await addStep(db, f.id, 'final-cycle', 'skipped', 'stop asked while waiting for the agent');
      return undefined;
    }
    const r = await awaitFinalCycle(db, f, FinalCycleSliceMs);
    if (r) {
      await addStep(db, f.id, 'final-cycle', 'done', `final cycle ${r.cycle} (${r.consistency}), captured ${r.capturedAt}; the VM was shut down by ${r.shutdown}`);
      return { cycle: r.cycle, capturedAt: r.capturedAt };
    }
  }
}

/** The point at exactly this cycle, cut once every disk has applied it (no data loss). */
async function pointAtCycle(rt: HostRuntime, f: FailoverRow, cycle: number): Promise<number> {
  const cut = await cutAtCycle(rt, f, cycle);
  await addStep(rt.ctx.db, f.id, 'point', 'done', `cut point ${cut.id} at the final cycle ${cycle}, captured ${cut.capturedAt.toISOString()}`);
  return cut.id;
}

/**
 * The VM's point at exactly this (final) cycle, cut once every disk has applied it; fails when the
 * disks went past it (the source kept replicating) or did not reach it within FinalApplyMs. A plan
 * run's cut of a planned run uses it too.
 */
export async function cutAtCycle(rt: Pick<HostRuntime, 'ctx' | 'redis' | 'lockPrefix'>, vm: { tenant: string; vm: string }, cycle: number): Promise<CutPointResult> {
  const deadline = Date.now() + FinalApplyMs;
  for (;;) {
    const cut = await cutPoint(rt.ctx, rt.redis, { tenant: vm.tenant, vm: vm.vm, timeoutMs: Math.max(1000, deadline - Date.now()), lockPrefix: rt.lockPrefix });
    if (cut.cycle !== null && cut.cycle >= cycle) {
      if (cut.cycle !== cycle) throw new Error(`the newest point of ${vm.vm} is at cycle ${cut.cycle}, after the final cycle ${cycle}: the source VM kept replicating`);
      return cut;
    }
    if (Date.now() > deadline) throw new Error(`the final cycle ${cycle} of ${vm.vm} was not applied on every disk within ${FinalApplyMs / 60_000} minutes (newest common cycle ${cut.cycle ?? 'none'})`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/**
 * Where each NIC is plugged in. A test failover's NICs share an isolated network of their own run
 * with nothing else (no route out). A real failover's NIC goes on the bridge (and VLAN) of the DR
 * network its plan names, which must be granted to the tenant and reached by this host; a NIC
 * without one gets an isolated network of its VM, and the report says so.
 */
async function attachNics(rt: HostRuntime, f: FailoverRow, spec: FailoverSpec, plan: NicPlan[]): Promise<FailoverNic[]> {
  const isolated = { kind: 'isolated' as const, runId: f.kind === 'test' ? f.id : `${f.tenant}.${f.vm}`, group: f.kind };
  const out: FailoverNic[] = [];
  const warnings: string[] = [];
  for (const n of spec.nics) {
    const name = f.kind === 'test' ? undefined : plan.find((p) => p.mac === n.mac)?.config.network;
    if (!name) {
      if (f.kind !== 'test') warnings.push(`NIC ${n.mac} names no DR network: it is on an isolated network of its VM`);
      out.push({ mac: n.mac, model: n.model, attachment: isolated });
      continue;
    }
    const net = await getNetwork(rt.ctx.db, name);
    const granted = net ? (await listNetworks(rt.ctx.db, f.tenant)).some((g) => g.name === name) : false;
    if (!net || !granted) throw new Error(`NIC ${n.mac}: DR network ${name} is not granted to tenant ${f.tenant}`);
    if (net.hosts.length > 0 && !net.hosts.includes(rt.hostName)) throw new Error(`NIC ${n.mac}: DR network ${name} is not reached by failover host ${rt.hostName} (only ${net.hosts.join(', ')})`);
    out.push({ mac: n.mac, model: n.model, attachment: { kind: 'bridge', bridge: net.bridge, ...(net.vlan !== null ? { vlan: net.vlan } : {}) } });
  }
  if (warnings.length > 0) {
    const now = (await getFailover(rt.ctx.db, f.id)) ?? f;
    await setFailoverState(rt.ctx.db, f.id, 'preparing', { warnings: [...now.warnings, ...warnings] });
  }
  return out;
}

/**
 * Pins the point for this failover while every disk's lock is held, so no prune is merging it away
 * at that moment, and records, per disk, the frozen layer the point names (the fork point).
 */
async function pinUnderLocks(rt: HostRuntime, f: FailoverRow, pointId: number, pointName: string, spec: FailoverSpec): Promise<ForkedDisk[]> {
  const disks = await listDisks(rt.ctx.db, f.tenant, f.vm);
  const locks: DiskLock[] = [];
  try {
    for (const disk of disks) {
      let lock: DiskLock | undefined;
      for (let i = 0; i < 600 && !lock; i++) {
        lock = await acquireLock(rt.redis, mergeJobId({ tenant: f.tenant, vm: f.vm, disk: disk.id }), disk.replicaDir, { prefix: rt.lockPrefix ?? 'lifeboat' });
        if (!lock) await new Promise((r) => setTimeout(r, 200));
      }
      if (!lock) throw new Error(`disk ${disk.id} stayed locked by a merge for two minutes`);
      locks.push(lock);
    }
    const fork: ForkedDisk[] = [];
    for (const d of spec.disks) {
      const disk = disks.find((x) => x.id === d.id);
      if (!disk) throw new Error(`disk ${d.id} of ${f.vm} is gone`);
      const state = await readState(disk.replicaDir);
      const p = state.points.find((x) => x.name === pointName);
      if (!p) throw new Error(`recovery point ${pointId} is not in the replica of ${d.id} (pruned)`);
      fork.push({ disk: d.id, replicaDir: disk.replicaDir, layer: p.layer, virtualSize: disk.virtualSize, bus: d.bus });
    }
    await pinPoint(rt.ctx.db, pointId, f.id);
    return fork;
  } finally {
    for (const lock of locks) await lock.release();
  }
}

const boot: Step = async (rt, f) => {
  const { db } = rt.ctx;
  const workDir = workDirOf(rt, f.id);
  const spec = f.spec as unknown as FailoverSpec;
  await addStep(db, f.id, 'start', 'started');
  await rt.driver.start(workDir);
  await addStep(db, f.id, 'start', 'done');
  await applyPublicIps(rt, f);
  await addStep(db, f.id, 'wait-ready', 'started', spec.readyProbes.map(describeProbe).join(' or '));
  const deadline = Date.now() + rt.ctx.config.failover.readyTimeoutSeconds * 1000;
  for (;;) {
    const now = await getFailover(db, f.id);
    if (!now || now.endedAt || now.goal === 'stopped' || now.goal === 'reverted') {
      await addStep(db, f.id, 'wait-ready', 'skipped', 'stop asked during boot');
      return;
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`the guest did not answer ${spec.readyProbes.map(describeProbe).join(' or ')} within ${rt.ctx.config.failover.readyTimeoutSeconds} s`);
    const r = await rt.driver.waitReady(workDir, spec.readyProbes, Math.min(ReadySliceMs, left));
    if (r.ready) {
      const answeredAt = Date.now();
      let shot = 'no screenshot';
      try {
        const png = await rt.driver.screenshot(workDir);
        await saveScreenshot(db, f.id, png);
        shot = `screenshot ${png.length} bytes`;
      } catch (err) {
        shot = `no screenshot: ${reasonOf(err)}`;
      }
      const readyAt = new Date();
      const state = f.kind === 'test' ? 'ready' : 'running';
      await db.transaction(async (tx) => {
        await addStep(tx, f.id, 'wait-ready', 'done', `${r.detail}; ready recorded ${readyAt.getTime() - answeredAt} ms after the probe answered; ${shot}`);
        await setFailoverState(tx, f.id, state, { readyAt });
      });
      try {
        await readBack(rt, f, state);
      } catch (err) {
        // Reading back is a check of the guest, not a step of bringing it up: it never fails the failover.
        await addStep(db, f.id, 'read-back', 'failed', `the guest's network could not be read back: ${reasonOf(err)}`);
      }
      return;
    }
    const status = await rt.driver.status(workDir);
    if (status.state === 'failed' || status.state === 'stopped') throw new Error(`qemu ended during boot: ${status.reason ?? status.state}`);
  }
};

/**
 * Read back, don't assume: what the guest reports of its network (its console report, else its
 * guest agent) beside the plan, every difference named in the report and as a warning. Once, right
 * after ready; a failover whose guest says nothing is marked unverified, not failed.
 */
async function readBack(rt: HostRuntime, f: FailoverRow, state: 'ready' | 'running'): Promise<void> {
  const spec = f.spec as unknown as FailoverSpec;
  if (!rt.driver.guestNetwork || spec.nics.length === 0) return;
  const { db } = rt.ctx;
  const workDir = workDirOf(rt, f.id);
  await addStep(db, f.id, 'read-back', 'started', 'the guest\'s addresses, routes and DNS beside the plan');
  const { plan } = JSON.parse(await readFile(join(workDir, NetworkPlanFile), 'utf8')) as { plan: NicPlan[] };
  // The console report comes when cloud-init's last stage runs, which can be minutes after the guest
  // agent answered; the guest agent's interfaces are the fallback. A stop asked meanwhile ends the wait.
  let report: GuestNetworkReport | undefined;
  const deadline = Date.now() + ReadBackWaitMs;
  while (Date.now() < deadline) {
    report = (await rt.driver.guestNetwork(workDir, ReadBackSliceMs)) ?? report;
    if (report?.source === 'console') break;
    const now = await getFailover(db, f.id);
    if (!now || now.endedAt || now.goal === 'stopped' || now.goal === 'reverted' || (now.goal === 'committed' && report)) break;
  }
  if (!report) {
    await setFailoverState(db, f.id, state, { network: { plan, source: null, comparison: null } });
    await addStep(db, f.id, 'read-back', 'skipped', 'the guest reported nothing (no console report, no guest agent): its network is unverified');
    return;
  }
  const observed = report.source === 'console' ? parseGuestNetwork(report.texts) : parseGuestAgentInterfaces(report.interfaces);
  const comparison = compareIntent(plan, observed);
  const now = (await getFailover(db, f.id)) ?? f;
  const warnings = comparison.differences.map((d) => `network ${d.mac}: ${d.detail}`);
  await setFailoverState(db, f.id, state, { network: { plan, source: report.source, comparison }, warnings: [...now.warnings, ...warnings] });
  await addStep(db, f.id, 'read-back', 'done', comparison.ok
    ? `from the ${report.source}: as planned${comparison.unchecked.length ? ` (not checked: ${comparison.unchecked.join('; ')})` : ''}`
    : `from the ${report.source}: ${comparison.differences.length} difference(s): ${warnings.join('; ')}`);
}

const commit: Step = async (rt, f) => {
  const { db } = rt.ctx;
  await db.transaction(async (tx) => {
    await setFailoverState(tx, f.id, 'committing');
    await addStep(tx, f.id, 'commit', 'started', 'block-stream of every disk from its export into its overlay');
  });
  await rt.driver.commit(workDirOf(rt, f.id));
  const keep = rt.driver.commitKeepsPoint === true;
  await releaseExports(rt, f, keep);
  await db.transaction(async (tx) => {
    await addStep(tx, f.id, 'commit', 'done', keep ? 'the VM keeps its disks as children of the point, which stays pinned' : 'the VM no longer reads the replica; its point is released');
    await setFailoverState(tx, f.id, 'committed');
  });
};

const teardown: Step = async (rt, f) => {
  const { db } = rt.ctx;
  const end = f.state === 'failed' ? 'failed' : f.goal === 'reverted' ? 'reverted' : 'stopped';
  if (f.state !== 'failed') await setFailoverState(db, f.id, 'stopping');
  await addStep(db, f.id, 'stop', 'started');
  const workDir = workDirOf(rt, f.id);
  await removePublicIps(rt, f);
  await rt.driver.stop(workDir, { graceful: false });
  await rt.driver.cleanup(workDir);
  await releaseExports(rt, f);
  await db.transaction(async (tx) => {
    await addStep(tx, f.id, 'stop', 'done', 'qemu ended; overlays, seeds and sockets deleted; exports closed; point released');
    await setFailoverState(tx, f.id, end, { endedAt: new Date() });
  });
};

/** Closes the failover's exports and releases its point (unless keepPin: its VM still reads it). */
async function releaseExports(rt: HostRuntime, f: FailoverRow, keepPin = false): Promise<void> {
  const current = (await getFailover(rt.ctx.db, f.id)) ?? f;
  if (current.pointId !== null) {
    for (const d of current.fork) await rt.dropExport(exportName(current, current.pointId, d.disk));
    if (!keepPin) await unpinPoint(rt.ctx.db, current.pointId, f.id);
  }
}

function describeProbe(p: ReadyProbe): string {
  return p.kind === 'guest-agent' ? 'the guest agent' : p.kind === 'console' ? `console /${p.pattern}/` : `TCP ${p.host}:${p.port}`;
}

/** One line for the failover's record: the user-facing message, else the error's own message. */
function reasonOf(err: unknown): string {
  return userMessage(err) ?? (err instanceof Error ? err.message : String(err));
}
