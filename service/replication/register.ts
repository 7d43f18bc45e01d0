/**
 * register-vm: the agent's `PUT /v1/vms/{vm}` (agent protocol §5.1). The first registration binds
 * the VM to the presenting server and the authorization entry that matched it, and creates each
 * disk's replica under that entry's storage; later ones update settings, add disks and grow them.
 * The hardware and NICs it reports are recorded in the same transaction (failover/recorded-config.ts).
 * Replica files are created before the catalog rows commit; a crash between leaves an unreferenced
 * directory that the next registration reuses (creation skips an existing state file).
 */
import { access, chmod, mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { createDisk, openDisk } from '../../shared/disk/index.js';
import type { AgentIdentity } from '../agent-api/auth.js';
import type { RegisterBody } from '../../shared/protocol/schemas.js';
import { frequencySeconds } from '../../shared/protocol/schemas.js';
import type { ServiceContext } from '../context.js';
import { lockTenantNetworking } from '../catalog/networks.js';
import { getDisk, getVm, insertDisk, insertVm, listDisks, updateDiskSize, updateVmSettings } from '../catalog/vms.js';
import { ErrConflict, ServiceError } from '../errors.js';
import { recordReportedConfig } from '../failover/recorded-config.js';
import { authorizationFor } from '../trust/enroll.js';
import type { DiskRef } from '../queue.js';
import { connectRedis, mergeJobId } from '../queue.js';
import { acquireLock } from '../workers/lock.js';
import { initialState, readState, replicaDir, writeState } from './replica.js';
import type { ReplicaFormat } from './replica.js';
import { checkTrustGroup } from './scope.js';
import { checkProtectedVmQuota } from '../usage/quotas.js';

export async function registerVm(ctx: ServiceContext, agent: AgentIdentity, vm: string, body: RegisterBody): Promise<{ created: boolean }> {
  const reports = body.hardware !== undefined || body.nics !== undefined || body.disks.some((d) => d.bus !== undefined);
  // A new VM counts against the tenant's quota of protected VMs (one registering again never does);
  // checked before the transaction so the refusal's event is kept.
  if (!(await getVm(ctx.db, agent.tenant, vm))) await checkProtectedVmQuota(ctx.db, agent.tenant);
  return ctx.db.transaction(async (tx) => {
    // The tenant's networking lock before the VM's row, in the order the NIC routes take them.
    if (reports) await lockTenantNetworking(tx, agent.tenant);
    const existing = await getVm(tx, agent.tenant, vm, true);
    const settings = {
      tenant: agent.tenant, name: vm, displayName: body.displayName ?? null, serverFqdn: agent.fqdn,
      frequencySeconds: frequencySeconds[body.frequency], history: body.history, appConsistentEvery: body.appConsistentEvery, compression: body.compression,
    };
    let storageDir: string;
    if (existing) {
      await checkTrustGroup(tx, agent, existing);
      const disks = await listDisks(tx, agent.tenant, vm);
      const removed = disks.find((d) => !body.disks.some((b) => b.id === d.id));
      if (removed) throw ErrConflict('disk_removed', `disk ${removed.id} of VM ${vm} is registered and cannot be dropped (unprotect the VM first)`);
      for (const d of disks) {
        const b = body.disks.find((x) => x.id === d.id)!;
        if (b.virtualSize < d.virtualSize) throw ErrConflict('disk_shrunk', `${d.id}: virtual size cannot shrink (${d.virtualSize} → ${b.virtualSize})`);
      }
      await updateVmSettings(tx, settings);
      storageDir = existing.storageDir;
    } else {
      const entry = await authorizationFor(tx, agent.tenant, agent.fqdn);
      storageDir = entry.storage === '' ? ctx.config.replicaRoot : entry.storage;
      await insertVm(tx, { ...settings, authorizationId: entry.id, trustGroup: entry.trustGroup, storageDir });
    }
    for (const b of body.disks) {
      const dir = replicaDir(storageDir, agent.tenant, vm, b.id);
      const row = await getDisk(tx, agent.tenant, vm, b.id);
      if (!row) {
        await createReplica(storageDir, dir, b.virtualSize, ctx.config.replicaFormat);
        await insertDisk(tx, { tenant: agent.tenant, vm, id: b.id, virtualSize: b.virtualSize, sourceFormat: b.format, replicaDir: dir });
      } else if (b.virtualSize > row.virtualSize) {
        await growReplica(ctx, { tenant: agent.tenant, vm, disk: b.id }, dir, b.virtualSize);
        await updateDiskSize(tx, agent.tenant, vm, b.id, b.virtualSize);
      }
    }
    if (reports) await recordReportedConfig(tx, agent.tenant, vm, body);
    return { created: !existing };
  });
}

/**
 * Creates the base layer (0600: a tenant's disk) and the initial state file, unless a previous attempt
 * already did. The storage root must exist: a missing one is storage gone or unmounted, and creating
 * it would put replicas on whatever disk lies beneath.
 */
async function createReplica(storage: string, dir: string, virtualSize: number, format: ReplicaFormat): Promise<void> {
  const root = await stat(storage).then((s) => s.isDirectory(), () => false);
  if (!root) throw new ServiceError('unavailable', `replica storage ${storage} is missing or not a directory (unmounted?)`, 'storage_missing');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  try {
    await access(join(dir, 'state.json'));
    return;
  } catch {
    // not created yet
  }
  const state = initialState(format);
  const disk = await createDisk(join(dir, state.layers[0]!), format, { virtualSize, type: 'dynamic' });
  await disk.close();
  await chmod(join(dir, state.layers[0]!), 0o600);
  await writeState(dir, state);
}

/**
 * Grows the replica's top layer to the registered size, under the disk's lock (lock.ts): a merge,
 * point or export may hold the disk, and its layer must not change size under it. When the lock is
 * taken the layer is left as it is, and the registration is not held up (it runs inside the catalog's
 * transaction): the disk's next log or delta base carries the new size in its header and the merge
 * grows the layer then, under the lock. Until then the replica, and any point taken, has the size of
 * the data last applied.
 */
async function growReplica(ctx: ServiceContext, ref: DiskRef, dir: string, virtualSize: number): Promise<void> {
  const redis = await connectRedis(ctx.config.redis.url);
  try {
    const lock = await acquireLock(redis, mergeJobId(ref), dir);
    if (!lock) {
      ctx.log.info({ ...ref, virtualSize }, 'replica busy; its next merge grows it to the registered size');
      return;
    }
    try {
      const state = await readState(dir);
      const top = await openDisk(join(dir, state.layers.at(-1)!));
      try {
        if (virtualSize > top.virtualSize) await top.resize(virtualSize);
        await top.flush();
      } finally {
        await top.close();
      }
    } finally {
      await lock.release();
    }
  } finally {
    redis.disconnect();
  }
}
