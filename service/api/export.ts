/**
 * export: a flat image (vhdx or raw) of one disk at a recovery point or at the latest applied state,
 * written by the service to a path on its own host (the operator's CLI runs beside it). The disk's
 * merge lock is held while reading, so no merge or prune changes the chain underneath: an export can
 * outlast the Redis lease (nothing renews it while converting), but the replica directory's kernel
 * lock (lock.ts) stays held until the export is done.
 */
import { isAbsolute, join } from 'node:path';
import { z } from 'zod';
import { openDisk } from '../../shared/disk/index.js';
import { convertDisk } from '../../shared/disk/ops/index.js';
import { LifeboatError } from '../../shared/errors.js';
import { getDisk } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import { connectRedis, mergeJobId } from '../queue.js';
import { readState } from '../replication/replica.js';
import { acquireLock } from '../workers/lock.js';
import { checkTenantName } from './operations.js';

export const exportSchema = z.strictObject({
  disk: z.string().min(1).max(64),
  point: z.string().regex(/^(latest|\d{1,18})$/, 'must be a point id or "latest"').default('latest'),
  format: z.enum(['vhdx', 'raw']),
  path: z.string().min(1).max(4096).refine(isAbsolute, 'must be an absolute path on the service host'),
});

export async function exportDisk(ctx: ServiceContext, tenant: string, vm: string, body: z.infer<typeof exportSchema>) {
  const disk = await getDisk(ctx.db, checkTenantName(tenant), vm, body.disk);
  if (!disk) throw new LifeboatError('not_found', `tenant ${tenant} has no VM ${vm} with disk ${body.disk}`);
  let pointName: string | undefined;
  if (body.point !== 'latest') {
    const rows = await ctx.db.query<{ layer: string }>('SELECT layer FROM recovery_points WHERE id = $1 AND tenant = $2 AND vm = $3', [Number(body.point), tenant, vm]);
    if (!rows[0]) throw new LifeboatError('not_found', `VM ${vm} has no recovery point ${body.point}`);
    pointName = rows[0].layer;
  }
  const redis = await connectRedis(ctx.config.redis.url);
  try {
    const lock = await acquireLock(redis, mergeJobId({ tenant, vm, disk: disk.id }), disk.replicaDir);
    if (!lock) throw new LifeboatError('unavailable', `disk ${disk.id} is being merged; try again`);
    try {
      const state = await readState(disk.replicaDir);
      const layer = pointName === undefined ? state.layers.at(-1)! : state.points.find((p) => p.name === pointName)?.layer;
      if (layer === undefined) throw new LifeboatError('not_found', `recovery point ${body.point} is not in the replica of ${disk.id}`);
      const src = await openDisk(join(disk.replicaDir, layer), { readOnly: true });
      try {
        await convertDisk(src, body.path, body.format);
      } finally {
        await src.close();
      }
      return { tenant, vm, disk: disk.id, point: body.point, format: body.format, path: body.path, virtualSize: src.virtualSize };
    } finally {
      await lock.release();
    }
  } finally {
    redis.disconnect();
  }
}
