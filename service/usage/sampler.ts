/**
 * The replica storage sampler: every DefaultSampleMs, per tenant, the allocated bytes of everything
 * under its VMs' replica directories (st_blocks × 512: a sparse hole costs nothing; base layers,
 * logs' layers, points and their state files all count), recorded as one replica_bytes usage event
 * per tenant. The timer only calls sample(); tests call it with their own clock.
 *
 * A directory that is missing (a VM just registered, storage unmounted) counts nothing and is logged;
 * one unreadable file does not stop the walk. A tenant left with no disk records 0 once, so its last
 * sample does not keep counting.
 */
import type { Dirent } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ServiceContext } from '../context.js';
import { latestReplicaBytes, recordReplicaBytes } from '../catalog/usage.js';

/** How often the sampler runs in a service process. */
export const DefaultSampleMs = 15 * 60_000;

/** Allocated bytes under a path (a file, or a directory walked without following links). */
export async function allocatedBytes(path: string): Promise<number> {
  let info;
  try {
    info = await lstat(path);
  } catch {
    return 0;
  }
  if (!info.isDirectory()) return info.isFile() ? info.blocks * 512 : 0;
  let entries: Dirent[];
  try {
    entries = await readdir(path, { withFileTypes: true });
  } catch {
    return 0;
  }
  let sum = 0;
  for (const e of entries) sum += await allocatedBytes(join(path, e.name));
  return sum;
}

/** Samples every tenant's replica storage now (or at `at`), records it, and returns bytes per tenant. */
export async function sampleReplicaStorage(ctx: Pick<ServiceContext, 'db' | 'log'>, at = new Date()): Promise<Map<string, number>> {
  const disks = await ctx.db.query<{ tenant: string; replicaDir: string }>('SELECT tenant, replica_dir AS "replicaDir" FROM disks ORDER BY tenant, vm, id');
  const out = new Map<string, number>();
  for (const d of disks) out.set(d.tenant, (out.get(d.tenant) ?? 0) + await allocatedBytes(d.replicaDir));
  // A tenant whose last sample was not zero and that has no disk left records its zero once.
  for (const [tenant, last] of await latestReplicaBytes(ctx.db)) if (last.bytes > 0 && !out.has(tenant)) out.set(tenant, 0);
  for (const [tenant, bytes] of out) await recordReplicaBytes(ctx.db, tenant, at, bytes);
  return out;
}

/** Runs sample() now and every intervalMs until stopped; a failed round is logged and the next one runs. */
export function startReplicaSampler(ctx: Pick<ServiceContext, 'db' | 'log'>, intervalMs = DefaultSampleMs): { stop(): Promise<void> } {
  let running: Promise<unknown> = Promise.resolve();
  const round = () => {
    running = sampleReplicaStorage(ctx).catch((err: unknown) => ctx.log.warn({ err: (err as Error).message }, 'replica storage sample failed'));
  };
  round();
  const timer = setInterval(round, intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
