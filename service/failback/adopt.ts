/**
 * Failback's turn of forward replication: the hoster's disks, which the VM wrote while it ran there,
 * become the replica, so replication from the tenant's site resumes without a new initial copy.
 *
 * Input: per disk of the VM, the hoster's image of it as it stands with the VM stopped (a committed
 * failover's overlay after block-stream holds the whole disk; any image qemu-img reads). The replica's
 * disks are locked one by one with the merge lock and its fencing token, as a merge would be.
 * Output: per disk, the image converted into a new base layer `base-g<G>.<fmt>` of a new generation G
 * (one past the applied one), state.json = { generation G, base complete, no points,
 * `resync_required` "failback: …" }, the catalog following; the VM's recovery points deleted (they
 * were of the old chain: points at the hoster start fresh) and the logs still pending from before
 * (held while the failover was live) skipped. The agent, told `resync_required` with a complete base,
 * sends a delta base of the next generation against the replica's block digests (protocol §9):
 * only the blocks where its disk differs from the hoster's, none once reverse replication made them
 * equal; its cycles after that ship only what changed.
 * Failure: a disk locked by a merge for two minutes, a pinned point of the VM (a failover still reads
 * the old chain), or qemu-img failing: an error naming the disk; disks done before stay done and a
 * retry finds them done (their state names the failback), so the call is idempotent.
 */
import { execFile } from 'node:child_process';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Redis } from 'ioredis';
import { LifeboatError } from '../../shared/errors.js';
import { vmHasPins } from '../catalog/pins.js';
import { listDisks } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import { mergeJobId } from '../queue.js';
import type { AppliedState } from '../replication/replica.js';
import { readState, sweepUnreferencedLayers } from '../replication/replica.js';
import { follow, writeFencedState } from '../workers/commit-state.js';
import type { DiskLock } from '../workers/lock.js';
import { acquireLock } from '../workers/lock.js';

const execFileP = promisify(execFile);

/** The reason the adopted disks carry: the agent logs it, status shows it. */
export const FailbackReason = 'failback: the hoster\'s disk is the replica; the agent sends the blocks that differ';

export interface AdoptDisk {
  id: string;
  /** The hoster's image of the disk (qcow2, raw, vhdx: what qemu-img reads). */
  image: string;
}

export interface AdoptedDisk {
  id: string;
  generation: number;
  layer: string;
  /** Bytes of the new base layer on replica storage. */
  bytes: number;
  /** False when a retry found the disk already adopted. */
  adopted: boolean;
}

export interface AdoptOptions {
  redis: Redis;
  lockPrefix?: string;
  /** qemu-img (failover.qemu.img). */
  qemuImg?: string;
}

export async function adoptHosterDisks(ctx: ServiceContext, tenant: string, vm: string, disks: readonly AdoptDisk[], o: AdoptOptions): Promise<AdoptedDisk[]> {
  if (await vmHasPins(ctx.db, tenant, vm)) throw new LifeboatError('conflict', `VM ${vm}: a recovery point is pinned (a failover still reads the replica); failback adopts the hoster's disks only when none is`);
  const rows = await listDisks(ctx.db, tenant, vm);
  const out: AdoptedDisk[] = [];
  for (const d of disks) {
    const row = rows.find((r) => r.id === d.id);
    if (!row) throw new LifeboatError('not_found', `VM ${vm} has no disk ${d.id}`);
    const ref = { tenant, vm, disk: d.id };
    const lock = await lockDisk(o, mergeJobId(ref), row.replicaDir, d.id);
    try {
      const state = await readState(row.replicaDir);
      if (state.resyncReason === FailbackReason && state.baseComplete && state.points.length === 0 && state.layers.length === 1) {
        out.push({ id: d.id, generation: state.generation, layer: state.layers[0]!, bytes: (await stat(join(row.replicaDir, state.layers[0]!))).size, adopted: false });
        continue;
      }
      await sweepUnreferencedLayers(row.replicaDir, state);
      const format = state.layers[0]!.endsWith('.raw') ? 'raw' : 'vhdx';
      const generation = state.generation + 1;
      const layer = `base-g${generation}.${format}`;
      const path = join(row.replicaDir, layer);
      await rm(path, { force: true });
      try {
        await execFileP(o.qemuImg ?? 'qemu-img', ['convert', '-q', '-O', format, ...(format === 'vhdx' ? ['-o', 'subformat=dynamic'] : []), d.image, path], { maxBuffer: 1 << 20 });
      } catch (err) {
        await rm(path, { force: true });
        throw new LifeboatError('io', `disk ${d.id}: qemu-img could not convert ${d.image}: ${String((err as { stderr?: string }).stderr ?? err).trim().split("\n")[0]}`, { cause: err });
      }
      const next: AppliedState = { ...state, generation, baseComplete: true, appliedSequence: 0, appliedCycle: null, state: 'resync_required', resyncReason: FailbackReason, layers: [layer], points: [] };
      const written = await writeFencedState(row.replicaDir, next, lock, `failback of ${tenant}/${vm}/${d.id}`);
      await follow(ctx, ref, written, null);
      // The old chain's layers and points go; logs still pending from before the failback never apply.
      await sweepUnreferencedLayers(row.replicaDir, written);
      await ctx.db.query(`UPDATE logs SET status = 'skipped' WHERE tenant = $1 AND vm = $2 AND disk = $3 AND generation < $4 AND status = 'pending'`, [tenant, vm, d.id, generation]);
      out.push({ id: d.id, generation, layer, bytes: (await stat(path)).size, adopted: true });
    } finally {
      await lock.release();
    }
  }
  await ctx.db.query('DELETE FROM recovery_points WHERE tenant = $1 AND vm = $2', [tenant, vm]);
  return out;
}

async function lockDisk(o: AdoptOptions, name: string, dir: string, disk: string): Promise<DiskLock> {
  for (let i = 0; i < 600; i++) {
    const lock = await acquireLock(o.redis, name, dir, { prefix: o.lockPrefix ?? 'lifeboat' });
    if (lock) return lock;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new LifeboatError('unavailable', `disk ${disk} stayed locked by a merge for two minutes`);
}
