/**
 * Replication events, found by comparison rather than at each write (a timer around
 * reportReplicationEvents in the worker process; tests call it with an injected clock):
 * - replication.health_changed when a protected VM's health (status.ts: normal, warning, critical)
 *   differs from the last one reported (a VM first seen counts as having been normal);
 * - replication.resync_required when a disk enters resync_required, once per generation and reason.
 * What was last reported is kept in event_watches, written in the event's transaction, so a change
 * is reported once however many workers run this.
 */
import type { Db } from '../catalog/db.js';
import { listDisks, listVms } from '../catalog/vms.js';
import { dropWatch, getWatch, setWatch, watchesWithPrefix } from '../catalog/webhooks.js';
import { emitEvent } from '../events/emit.js';
import { vmStatus } from './status.js';

export async function reportReplicationEvents(db: Db, now = new Date()): Promise<number> {
  let emitted = 0;
  const resyncSeen = new Set<string>();
  for (const vm of await listVms(db)) {
    if (!vm.protected) continue;
    const status = await vmStatus(db, vm, now);
    const healthKey = `health:${vm.tenant}/${vm.name}`;
    const was = (await getWatch(db, healthKey)) ?? 'normal';
    if (status.health !== was) {
      emitted += await db.transaction(async (tx) => {
        if (!(await setWatch(tx, healthKey, status.health))) return 0;
        await emitEvent(tx, { type: 'replication.health_changed', tenant: vm.tenant, at: now, data: {
          vm: vm.name, from: was, to: status.health, state: status.state, lastAppliedAt: status.lastAppliedAt, lastError: status.lastError,
          cycles: status.cycles, pendingLogs: status.pendingLogs, pendingBytes: status.pendingBytes,
        } });
        return 1;
      });
    }
    for (const d of await listDisks(db, vm.tenant, vm.name)) {
      if (d.state !== 'resync_required') continue;
      const key = `resync:${vm.tenant}/${vm.name}/${d.id}`;
      resyncSeen.add(key);
      emitted += await db.transaction(async (tx) => {
        if (!(await setWatch(tx, key, `${d.generation}:${d.resyncReason ?? ''}`))) return 0;
        await emitEvent(tx, { type: 'replication.resync_required', tenant: vm.tenant, at: now, data: { vm: vm.name, disk: d.id, generation: d.generation, reason: d.resyncReason } });
        return 1;
      });
    }
  }
  // A disk out of resync_required may need it again later: that is a new event.
  for (const w of await watchesWithPrefix(db, 'resync:')) if (!resyncSeen.has(w.key)) await dropWatch(db, w.key);
  return emitted;
}
