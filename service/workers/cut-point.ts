/**
 * cutPoint: a recovery point cut on demand, for a failover from "latest" (it does not wait for the
 * next hourly point).
 *
 * Input: { tenant, vm, timeoutMs, lockPrefix? }. Output: the point at the newest cycle every disk of
 *   the VM can be frozen at (cycle-plan.ts): one already there is reused; otherwise the VM's merge
 *   barrier is raised at that cycle, the disks that lag are merged up to it here (merges of the others
 *   stop there), and every disk is frozen at it under all the disks' locks (Pointer.cutAt). The
 *   point's capturedAt is the agent's capture time of that cycle.
 * Failure codes: `not_found` (no such VM), `conflict` (a disk has no complete base, or is not
 *   replicating), `unavailable` (no cycle every disk reached within timeoutMs; the message names each
 *   disk's cycle). The barrier this call raised is dropped whatever the outcome.
 * Idempotent: a second call finds the first's point at the same cycle; a worker killed mid-cut leaves
 *   a point some disks froze without a catalog row, undone before the next point (points-job.ts), and
 *   a barrier that lapses with its lease.
 */
import type { Redis } from 'ioredis';
import { ErrNotFound, LifeboatError } from '../../shared/errors.js';
import { getVm, listDisks } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import { dropBarrier, raiseBarrier } from './barrier.js';
import { describeCycles, planCycle } from './cycle-plan.js';
import { Merger } from './merger.js';
import type { CutPointResult } from './points-job.js';
import { Pointer } from './points-job.js';

export type { CutPointResult } from './points-job.js';

export interface CutPointOptions {
  tenant: string;
  vm: string;
  /** How long to wait for the disks to reach one cycle. */
  timeoutMs: number;
  /** Redis key prefix of locks and barriers ('lifeboat'). */
  lockPrefix?: string;
}

/** Pause between rounds while disks catch up or locks are busy. */
const RetryMs = 100;

export async function cutPoint(ctx: ServiceContext, redis: Redis, options: CutPointOptions): Promise<CutPointResult> {
  const { tenant, vm: name, timeoutMs } = options;
  const prefix = options.lockPrefix ?? 'lifeboat';
  const vm = await getVm(ctx.db, tenant, name);
  if (!vm) throw ErrNotFound(`VM ${tenant}/${name} does not exist`);
  const pointer = new Pointer(ctx, redis, prefix);
  const merger = new Merger(ctx, redis, prefix);
  const deadline = Date.now() + timeoutMs;
  let raised: number | undefined;
  let last = '';
  try {
    for (;;) {
      const disks = await listDisks(ctx.db, tenant, name);
      const plan = await planCycle(ctx.db, disks);
      if (plan.kind === 'unready') throw new LifeboatError('conflict', `cannot cut a point of ${tenant}/${name}: ${plan.reason}`);
      last = describeCycles(plan.states);
      if (plan.kind === 'ready') {
        const existing = plan.cycle === null ? undefined : await pointAt(ctx, tenant, name, plan.cycle);
        if (existing) return existing;
        const made = await pointer.cutAt(vm, plan.cycle, new Date(), async () => plan.cycle === null || (await pointAt(ctx, tenant, name, plan.cycle)) === undefined);
        if (made) return made;
      } else if (plan.kind === 'wait') {
        const remaining = Math.max(1, deadline - Date.now());
        const cycle = await raiseBarrier(redis, prefix, tenant, name, plan.cycle, plan.floor, remaining + 30_000);
        if (raised !== undefined && raised !== cycle) await dropBarrier(redis, prefix, tenant, name, raised);
        raised = cycle;
        // Drive the lagging disks up to the barrier here rather than wait for their queue jobs.
        let moved = false;
        for (const disk of plan.lagging) moved = ((await merger.mergeDisk({ tenant, vm: name, disk }))?.applied ?? 0) > 0 || moved;
        if (moved) continue;
      }
      if (Date.now() >= deadline) {
        throw new LifeboatError('unavailable', `no cycle of ${tenant}/${name} was reached by every disk within ${timeoutMs} ms (${last}); the newest complete point is the latest there is`);
      }
      await new Promise((r) => setTimeout(r, RetryMs));
    }
  } finally {
    if (raised !== undefined) await dropBarrier(redis, prefix, tenant, name, raised);
  }
}

/** The VM's newest point at cycle, if any. */
async function pointAt(ctx: ServiceContext, tenant: string, vm: string, cycle: number): Promise<CutPointResult | undefined> {
  const rows = await ctx.db.query<CutPointResult>(`SELECT id, cycle, COALESCE(captured_at, created_at) AS "capturedAt", consistency, layer FROM recovery_points
    WHERE tenant = $1 AND vm = $2 AND cycle = $3 ORDER BY id DESC LIMIT 1`, [tenant, vm, cycle]);
  return rows[0];
}
