/**
 * Jobs `point` and `prune` (run by the Pointer daemon: a timer around `points(now)` and `prune(now)`,
 * called directly by tests with an injected clock).
 *
 * point — Input: a protected VM with history N > 0 whose every disk has a complete base, and whose
 *   newest point is an hour old or more (or none). Output: on each disk, under its merge lock, the top
 *   layer is frozen and a new empty child becomes the top (`p<ms>.vhdx`); state.json gains the point;
 *   then one catalog row for the VM. The point is application-consistent when the last applied log of
 *   every disk was. Failure: a disk in resync_required or locked by a merge → the VM is skipped this
 *   round (retried next tick). Idempotent: a disk whose state.json already has the point is left alone;
 *   the catalog row is written while every disk's lock is held, and a point some disks froze but the
 *   catalog never recorded (a killed worker) is undone before the next one is made (undoInterrupted).
 * prune — Input: points older than N hours. Output: the point's frozen layer (unless it is the base)
 *   is merged into the base (mergeChild), the next layer re-parented onto the base, the layer dropped
 *   from state.json and deleted; then the catalog row goes. Idempotent: mergeChild writes the same
 *   bytes on a rerun and state.json changes in one atomic write, the file deletion comes last.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { createChildDisk, openDisk } from '../../shared/disk/index.js';
import { mergeChild } from '../../shared/disk/ops/index.js';
import type { DiskRow, VmRow } from '../catalog/vms.js';
import { listDisks, listVms } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import { mergeJobId } from '../queue.js';
import type { AppliedState } from '../replication/replica.js';
import { readState, sweepUnreferencedLayers } from '../replication/replica.js';
import { writeFencedState } from './commit-state.js';
import type { DiskLock } from './lock.js';
import { acquireLock } from './lock.js';
import { dropBarrier, raiseBarrier } from './barrier.js';
import { planCycle } from './cycle-plan.js';
import type { Queryable } from '../catalog/db.js';
import { claimForPrune, pinnedPoints } from '../catalog/pins.js';
import { emitEvent } from '../events/emit.js';

export const PointEveryMs = 3_600_000;
/** How long an hourly point's merge barrier stands before it lapses (renewed by each round that waits). */
export const PointBarrierMs = 10 * 60_000;

/** A point as cut: what the failover engine and the API need of it. */
export interface CutPointResult {
  id: number;
  cycle: number | null;
  /** The agent's capture time of the point's cycle: RPO is measured from it. */
  capturedAt: Date;
  consistency: 'crash' | 'application';
  layer: string;
}

/** True when every disk's state.json says it is at cycle (read under the disks' locks). */
async function allAtCycle(disks: DiskRow[], cycle: number | null): Promise<boolean> {
  for (const d of disks) if ((await readState(d.replicaDir)).appliedCycle !== cycle) return false;
  return true;
}

/**
 * The agent's capture time of cycle (from the logs and base chunks of that cycle). A VM at no cycle
 * (version-1 logs): the oldest of its disks' last applied logs' creation times, the agent's clock
 * too; `fallback` (the service's clock) only when nothing says.
 */
export async function capturedAtOf(db: Queryable, vm: Pick<VmRow, 'tenant' | 'name'>, disks: DiskRow[], cycle: number | null, fallback: Date): Promise<Date> {
  if (cycle !== null) {
    const rows = await db.query<{ at: Date | null }>('SELECT min(captured_at) AS at FROM logs WHERE tenant = $1 AND vm = $2 AND cycle = $3', [vm.tenant, vm.name, cycle]);
    if (rows[0]?.at) return new Date(rows[0].at);
  }
  let oldest: Date | undefined;
  for (const d of disks) {
    const rows = await db.query<{ at: Date }>(`SELECT created_at AS at FROM logs WHERE tenant = $1 AND vm = $2 AND disk = $3 AND kind = 'log' AND generation = $4 AND sequence = $5`,
      [vm.tenant, vm.name, d.id, d.generation, d.appliedSequence]);
    const at = rows[0]?.at;
    if (at && (!oldest || new Date(at) < oldest)) oldest = new Date(at);
  }
  return oldest ?? fallback;
}

type Point = AppliedState['points'][number];

export class Pointer {
  constructor(private readonly ctx: ServiceContext, private readonly redis: Redis, private readonly lockPrefix = 'lifeboat') {}

  /** Makes the points that are due at now; returns how many VMs got one. */
  async points(now = new Date()): Promise<number> {
    let made = 0;
    for (const vm of await listVms(this.ctx.db)) {
      if (!vm.protected || vm.history === 0) continue;
      if (!(await this.due(vm, now))) continue;
      if (await this.makePoint(vm, now)) made++;
    }
    return made;
  }

  /** True when the VM's newest point is an hour old or more at now, or it has none. */
  private async due(vm: VmRow, now: Date): Promise<boolean> {
    const last = await this.ctx.db.query<{ at: Date }>('SELECT max(created_at) AS at FROM recovery_points WHERE tenant = $1 AND vm = $2', [vm.tenant, vm.name]);
    const at = last[0]?.at ?? null;
    return at === null || now.getTime() - new Date(at).getTime() >= PointEveryMs;
  }

  /**
   * Drops the points older than each VM's history, oldest first; returns how many. A VM's pruning
   * stops at its first pinned point and at anything older than its newest pinned point (pins.ts):
   * pruning merges a point's layer into the layer below it, which older points and the pinned one
   * read. A point is claimed (its catalog row deleted, if it is not pinned) under all the disks'
   * locks before any layer is touched, so a pin taken meanwhile either came first and stops the prune,
   * or finds the point gone; a prune killed after the claim is finished by undoInterrupted.
   */
  async prune(now = new Date()): Promise<number> {
    let pruned = 0;
    for (const vm of await listVms(this.ctx.db)) {
      const old = await this.ctx.db.query<{ id: number; layer: string; createdAt: Date }>(
        'SELECT id, layer, created_at AS "createdAt" FROM recovery_points WHERE tenant = $1 AND vm = $2 AND created_at <= $3 ORDER BY created_at, id',
        [vm.tenant, vm.name, new Date(now.getTime() - vm.history * PointEveryMs)]);
      await this.finishInterrupted(vm);
      const pins = await pinnedPoints(this.ctx.db, vm.tenant, vm.name);
      const newestPinned = pins.length === 0 ? -Infinity : Math.max(...pins.map((p) => new Date(p.pointCreatedAt).getTime()));
      for (const point of old) {
        if (new Date(point.createdAt).getTime() <= newestPinned) break;
        if (!(await this.onEachDisk(vm, (disk, lock) => this.prunePoint(disk, point.layer, lock), undefined, () => claimForPrune(this.ctx.db, point.id)))) break;
        pruned++;
      }
    }
    return pruned;
  }

  /**
   * A prune killed after it claimed its point (the catalog row is gone) leaves the point in some
   * disks' state.json: those are undone now, under all the disks' locks, as an interrupted point is
   * (undoInterrupted), so the catalog and every state.json name the same points again.
   */
  private async finishInterrupted(vm: VmRow): Promise<void> {
    const disks = await listDisks(this.ctx.db, vm.tenant, vm.name);
    const known = new Set((await this.ctx.db.query<{ layer: string }>('SELECT layer FROM recovery_points WHERE tenant = $1 AND vm = $2', [vm.tenant, vm.name])).map((r) => r.layer));
    let orphans = false;
    for (const d of disks) {
      const state = await readState(d.replicaDir).catch(() => undefined);
      if (state?.points.some((p) => !known.has(p.name))) orphans = true;
    }
    if (orphans) await this.onEachDisk(vm, (disk, lock) => this.undoInterrupted(disk, '', lock));
  }

  /**
   * Freezes a point on every disk of the VM if one is still due once all their locks are held: two
   * workers that both saw the point due make it once (the second finds the first's catalog row).
   * The point is one VM cycle (cycle-plan.ts): when the disks are not all at one cycle yet, the VM's
   * merge barrier is raised at the cycle they can meet at and nothing is made now; a later round finds
   * them there. False when nothing was made. Called by points(), and by tests to play the second worker.
   */
  async makePoint(vm: VmRow, now: Date): Promise<boolean> {
    const disks = await listDisks(this.ctx.db, vm.tenant, vm.name);
    const plan = await planCycle(this.ctx.db, disks);
    if (plan.kind === 'unready' || plan.kind === 'none') return false;
    if (plan.kind === 'wait') {
      const cycle = await raiseBarrier(this.redis, this.lockPrefix, vm.tenant, vm.name, plan.cycle, plan.floor, PointBarrierMs);
      this.ctx.log.info({ tenant: vm.tenant, vm: vm.name, cycle, lagging: plan.lagging }, 'point waits for every disk to reach one cycle; merges stop there');
      return false;
    }
    const made = await this.cutAt(vm, plan.cycle, now, () => this.due(vm, now));
    return made !== undefined;
  }

  /**
   * Cuts a point at cycle on every disk, under all the disks' locks, if every disk's state.json still
   * says it is at that cycle and stillWanted agrees; returns the new point, or undefined when nothing
   * was made (a disk busy or moved on, or not wanted any more). Drops the VM's barrier at that cycle.
   */
  async cutAt(vm: Pick<VmRow, 'tenant' | 'name'>, cycle: number | null, now: Date, stillWanted: () => Promise<boolean>): Promise<CutPointResult | undefined> {
    const disks = await listDisks(this.ctx.db, vm.tenant, vm.name);
    if (disks.length === 0 || disks.some((d) => !d.baseComplete || d.state !== 'replicating')) return undefined;
    const name = `p${now.getTime()}`;
    const consistency = await this.consistencyOf(vm, disks);
    const capturedAt = await capturedAtOf(this.ctx.db, vm, disks, cycle, now);
    let made: CutPointResult | undefined;
    // The catalog row goes in while the locks are still held: until then another worker would take
    // this point for an interrupted one (below) and undo it.
    const ok = await this.onEachDisk(vm, (disk, lock) => this.freeze(disk, { name, layer: '', createdAt: now.toISOString(), consistency, cycle }, lock),
      async () => {
        made = await this.ctx.db.transaction(async (tx) => {
          const rows = await tx.query<{ id: number }>('INSERT INTO recovery_points (tenant, vm, created_at, consistency, layer, cycle, captured_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id',
            [vm.tenant, vm.name, now, consistency, name, cycle, capturedAt]);
          const point = { id: rows[0]!.id, cycle, capturedAt, consistency, layer: name };
          await emitEvent(tx, { type: 'point.created', tenant: vm.tenant, at: now, data: { vm: vm.name, point: point.id, cycle, consistency, capturedAt: capturedAt.toISOString() } });
          return point;
        });
      }, async () => (await allAtCycle(disks, cycle)) && stillWanted());
    if (ok && cycle !== null) await dropBarrier(this.redis, this.lockPrefix, vm.tenant, vm.name, cycle);
    return ok ? made : undefined;
  }

  private async consistencyOf(vm: Pick<VmRow, 'tenant' | 'name'>, disks: DiskRow[]): Promise<'crash' | 'application'> {
    for (const d of disks) {
      const rows = await this.ctx.db.query<{ consistency: string }>(`SELECT consistency FROM logs WHERE tenant = $1 AND vm = $2 AND disk = $3 AND kind = 'log'
        AND generation = $4 AND sequence = $5 AND status = 'applied'`, [vm.tenant, vm.name, d.id, d.generation, d.appliedSequence]);
      if (rows[0]?.consistency !== 'application') return 'crash';
    }
    return 'application';
  }

  /**
   * Runs fn on every disk of the VM holding all their merge locks (and their directories' kernel
   * locks, lock.ts) at once, so a point spans the same moment on every disk; false (nothing done)
   * when any disk was busy, or when stillWanted, asked once every lock is held, says no.
   */
  private async onEachDisk(vm: Pick<VmRow, 'tenant' | 'name'>, fn: (disk: DiskRow, lock: DiskLock) => Promise<void>, whileLocked?: () => Promise<void>, stillWanted?: () => Promise<boolean>): Promise<boolean> {
    const disks = await listDisks(this.ctx.db, vm.tenant, vm.name);
    const locks: DiskLock[] = [];
    try {
      for (const disk of disks) {
        const lock = await acquireLock(this.redis, mergeJobId({ tenant: vm.tenant, vm: vm.name, disk: disk.id }), disk.replicaDir, { prefix: this.lockPrefix });
        if (!lock) return false;
        locks.push(lock);
      }
      if (stillWanted && !(await stillWanted())) return false;
      for (const [i, disk] of disks.entries()) await fn(disk, locks[i]!);
      await whileLocked?.();
      return true;
    } finally {
      for (const lock of locks) await lock.release();
    }
  }

  private async freeze(disk: DiskRow, point: Point, lock: DiskLock): Promise<void> {
    const dir = disk.replicaDir;
    await this.undoInterrupted(disk, point.name, lock);
    const state = await readState(dir);
    if (state.points.some((p) => p.name === point.name)) return;
    const swept = await sweepUnreferencedLayers(dir, state);
    if (swept.length > 0) this.ctx.log.info({ tenant: disk.tenant, vm: disk.vm, disk: disk.id, swept }, 'deleted layer files no state names (left by a killed worker)');
    const top = state.layers.at(-1)!;
    const child = `${point.name}.vhdx`;
    await rm(join(dir, child), { force: true });
    const image = await createChildDisk(join(dir, child), join(dir, top));
    await image.close();
    await writeFencedState(dir, { ...state, layers: [...state.layers, child], points: [...state.points, { ...point, layer: top }] }, lock, `point ${point.name} of ${disk.id}`);
  }

  /**
   * A point in state.json without a catalog row is one whose creation was interrupted after this disk
   * froze and before every disk had (a worker killed mid-way): the VM has no such point, and its layer
   * would stay in the chain for good. It is undone: the layer above the frozen one is merged back into
   * it (mergeChild; a point that froze that layer now names the merged one, which reads the same), the
   * layer after it re-parented, state.json written without the point, and the merged file deleted.
   * Crash-safe like a prune: state.json changes in one fenced write after the merge, which a rerun
   * repeats with the same bytes. `keep` is the point being made now (a rerun with the same name).
   * An orphan that is the disk's oldest point, frozen above the base, is pruned instead (prunePoint):
   * it may be a prune's claim, and pruning the oldest point is right whichever it was.
   */
  private async undoInterrupted(disk: DiskRow, keep: string, lock: DiskLock): Promise<void> {
    const dir = disk.replicaDir;
    const known = new Set((await this.ctx.db.query<{ layer: string }>('SELECT layer FROM recovery_points WHERE tenant = $1 AND vm = $2', [disk.tenant, disk.vm])).map((r) => r.layer));
    known.add(keep);
    for (;;) {
      const state = await readState(dir);
      const orphan = state.points.findLast((p) => !known.has(p.name));
      if (!orphan) return;
      if (orphan === state.points[0] && orphan.layer !== state.layers[0]) {
        // The oldest point may be a prune's, killed after it merged the point's layer into the base:
        // the layers above no longer open on the changed base, so it is finished as that prune.
        await this.prunePoint(disk, orphan.name, lock);
        continue;
      }
      const i = state.layers.indexOf(orphan.layer);
      const above = state.layers[i + 1];
      const what = `undo interrupted point ${orphan.name} of ${disk.id}`;
      if (i < 0 || above === undefined) {
        await writeFencedState(dir, { ...state, points: state.points.filter((p) => p !== orphan) }, lock, what);
        continue;
      }
      await mergeChild(join(dir, above));
      const after = state.layers[i + 2];
      if (after !== undefined) {
        const next = await openDisk(join(dir, after), { acceptChangedParent: true });
        try {
          await next.setParent?.(join(dir, orphan.layer));
        } finally {
          await next.close();
        }
      }
      const points = state.points.filter((p) => p !== orphan).map((p) => (p.layer === above ? { ...p, layer: orphan.layer } : p));
      await writeFencedState(dir, { ...state, layers: state.layers.filter((l) => l !== above), points }, lock, what);
      await rm(join(dir, above), { force: true });
    }
  }

  private async prunePoint(disk: DiskRow, name: string, lock: DiskLock): Promise<void> {
    const dir = disk.replicaDir;
    const state = await readState(dir);
    const point = state.points.find((p) => p.name === name);
    if (!point) return;
    const base = state.layers[0]!;
    let layers = state.layers;
    if (point.layer !== base) {
      const i = state.layers.indexOf(point.layer);
      await mergeChild(join(dir, point.layer));
      // A rerun after a kill merged the layer into the base again, so the base's DataWriteGuid moved
      // past the link the first run wrote into the next layer; setParent rewrites that link.
      const next = await openDisk(join(dir, state.layers[i + 1]!), { acceptChangedParent: true });
      try {
        await next.setParent?.(join(dir, base));
      } finally {
        await next.close();
      }
      layers = state.layers.filter((l) => l !== point.layer);
    }
    await writeFencedState(dir, { ...state, layers, points: state.points.filter((p) => p.name !== name) }, lock, `prune ${name} of ${disk.id}`);
    if (layers !== state.layers) await rm(join(dir, point.layer), { force: true });
  }
}
