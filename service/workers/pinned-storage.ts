/**
 * Storage held only because of pins, for status and metrics. Prune (points-job.ts) merges each point
 * older than its VM's history into the base and deletes its layer file; a pin stops that for the
 * pinned point and everything older. What a pin holds is therefore the layer files of the VM's
 * points that are older than its history but kept, on every disk (a point whose layer is the base
 * holds nothing extra). The bytes are the files' allocated sizes on replica storage.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pinnedPoints } from '../catalog/pins.js';
import { listDisks, listVms } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import { readState } from '../replication/replica.js';
import { PointEveryMs } from './points-job.js';

export interface PinnedStorage {
  tenant: string;
  vm: string;
  /** Pinned points of the VM. */
  pins: number;
  /** Points older than the VM's history kept because of its pins. */
  heldPoints: number;
  /** Bytes of their layer files, over every disk. */
  bytes: number;
}

/** Pinned storage per VM with at least one pin (of one tenant, when given), at now. */
export async function pinnedStorage(ctx: ServiceContext, options: { tenant?: string; now?: Date } = {}): Promise<PinnedStorage[]> {
  const now = options.now ?? new Date();
  const out: PinnedStorage[] = [];
  for (const vm of await listVms(ctx.db, options.tenant)) {
    const pins = await pinnedPoints(ctx.db, vm.tenant, vm.name);
    if (pins.length === 0) continue;
    const held = await ctx.db.query<{ layer: string }>('SELECT layer FROM recovery_points WHERE tenant = $1 AND vm = $2 AND created_at <= $3',
      [vm.tenant, vm.name, new Date(now.getTime() - vm.history * PointEveryMs)]);
    const names = new Set(held.map((p) => p.layer));
    let bytes = 0;
    for (const disk of await listDisks(ctx.db, vm.tenant, vm.name)) {
      const state = await readState(disk.replicaDir).catch(() => undefined);
      for (const point of state?.points ?? []) {
        if (!names.has(point.name) || point.layer === state!.layers[0]) continue;
        const st = await stat(join(disk.replicaDir, point.layer)).catch(() => undefined);
        bytes += st ? st.blocks * 512 : 0;
      }
    }
    out.push({ tenant: vm.tenant, vm: vm.name, pins: new Set(pins.map((p) => p.pointId)).size, heldPoints: held.length, bytes });
  }
  return out;
}
