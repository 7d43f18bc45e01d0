/**
 * The merge daemon's public methods: `mergeDisk(ref)` runs merge-job.ts for one disk under its lock;
 * `merge()` sweeps every disk with pending work once (the periodic timer and tests call it), so a
 * commit whose queue job was swallowed by a job already running is still merged.
 */
import type { Redis } from 'ioredis';
import { holdingFailover } from '../catalog/failovers.js';
import { getDisk } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import type { DiskRef } from '../queue.js';
import { mergeJobId } from '../queue.js';
import { vmBarrier } from './barrier.js';
import { acquireLock } from './lock.js';
import type { MergeResult } from './merge-job.js';
import { mergeDisk } from './merge-job.js';

export class Merger {
  constructor(private readonly ctx: ServiceContext, private readonly redis: Redis, private readonly lockPrefix = 'lifeboat') {}

  /**
   * Merges one disk; undefined when another worker holds it (it will see this disk's work), or when a
   * holder whose lease lapsed still holds the replica directory's kernel lock (the job retries).
   * Nothing is applied while the VM is failed over (holdingFailover): its logs stay pending.
   */
  async mergeDisk(ref: DiskRef): Promise<MergeResult | undefined> {
    const disk = await getDisk(this.ctx.db, ref.tenant, ref.vm, ref.disk);
    // As merge-job.ts answers for a disk the catalog does not have (its directory is not known).
    if (!disk) return { applied: 0, duplicates: 0, rejected: 0, appliedSequence: 0, state: 'initial_required' };
    if (await holdingFailover(this.ctx.db, ref.tenant, ref.vm)) return { applied: 0, duplicates: 0, rejected: 0, appliedSequence: disk.appliedSequence, state: disk.state };
    const lock = await acquireLock(this.redis, mergeJobId(ref), disk.replicaDir, { prefix: this.lockPrefix });
    if (!lock) return undefined;
    try {
      return await mergeDisk(this.ctx, ref, lock, vmBarrier(this.redis, this.lockPrefix, ref.tenant, ref.vm));
    } finally {
      await lock.release();
    }
  }

  /**
   * One sweep over every disk with pending logs or bases; returns how many logs were applied. The
   * daemon passes olderThanMs so it only picks up work its queue jobs missed, instead of contending
   * with them for the same locks; tests call it without.
   */
  async merge(options: { olderThanMs?: number } = {}): Promise<number> {
    const age = options.olderThanMs ?? 0;
    const disks = await this.ctx.db.query<DiskRef>(`SELECT DISTINCT tenant, vm, disk FROM logs WHERE status = 'pending' AND committed_at <= now() - $1 * interval '1 millisecond'
      UNION SELECT DISTINCT tenant, vm, disk FROM bases WHERE status = 'pending'`, [age]);
    let applied = 0;
    for (const ref of disks) applied += (await this.mergeDisk(ref))?.applied ?? 0;
    return applied;
  }
}
