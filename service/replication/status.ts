/**
 * The VM status document (agent protocol §5.3), shared by the agent endpoint and the operator API.
 * Health as Hyper-V reports it: critical when a disk needs resynchronization; warning when nothing
 * was applied for over an hour while the VM is protected and has a base; normal otherwise.
 */
import type { Queryable } from '../catalog/db.js';
import { pendingByDisk } from '../catalog/logs.js';
import type { DiskRow, VmRow } from '../catalog/vms.js';
import { listDisks } from '../catalog/vms.js';

export const WarningAfterMs = 3_600_000;
const frequencyName: Record<number, string> = { 30: '30s', 300: '5m', 900: '15m' };
const stateRank = ['replicating', 'initial_in_progress', 'initial_required', 'resync_required'] as const;

export type Health = 'normal' | 'warning' | 'critical';

export async function vmStatus(db: Queryable, vm: VmRow, now = new Date()) {
  const disks = await listDisks(db, vm.tenant, vm.name);
  const pending = await pendingByDisk(db, vm.tenant, vm.name);
  const lastAppliedAt = latest(disks.map((d) => d.lastAppliedAt));
  const worst = disks.reduce((w, d) => Math.max(w, stateRank.indexOf(d.state)), 0);
  const state = vm.protected ? stateRank[worst]! : 'unprotected';
  return {
    vm: vm.name,
    tenant: vm.tenant,
    displayName: vm.displayName,
    state,
    health: health(vm, disks, lastAppliedAt, now),
    frequency: frequencyName[vm.frequencySeconds] ?? `${vm.frequencySeconds}s`,
    history: vm.history,
    appConsistentEvery: vm.appConsistentEvery,
    compression: vm.compression,
    lastAppliedAt: lastAppliedAt?.toISOString() ?? null,
    pendingLogs: [...pending.values()].reduce((n, p) => n + p.logs, 0),
    disks: disks.map((d) => diskStatus(d, pending.get(d.id))),
  };
}

function diskStatus(d: DiskRow, pending: { logs: number; bytes: number } | undefined) {
  const action = d.state === 'resync_required' ? 'resync' : d.baseComplete ? 'logs' : 'initial';
  return {
    id: d.id,
    virtualSize: d.virtualSize,
    state: d.state,
    resyncReason: d.resyncReason,
    generation: d.generation,
    baseComplete: d.baseComplete,
    appliedSequence: d.appliedSequence,
    nextSequence: d.appliedSequence + 1,
    pendingLogs: pending?.logs ?? 0,
    pendingBytes: pending?.bytes ?? 0,
    lastAppliedAt: d.lastAppliedAt?.toISOString() ?? null,
    expect: { action, generation: d.generation, nextSequence: d.appliedSequence + 1 },
  };
}

function health(vm: VmRow, disks: DiskRow[], lastAppliedAt: Date | undefined, now: Date): Health {
  if (!vm.protected) return 'normal';
  if (disks.some((d) => d.state === 'resync_required')) return 'critical';
  const since = lastAppliedAt ?? vm.createdAt;
  if (now.getTime() - since.getTime() > WarningAfterMs) return 'warning';
  return 'normal';
}

function latest(dates: (Date | null)[]): Date | undefined {
  let best: Date | undefined;
  for (const d of dates) if (d && (!best || d > best)) best = d;
  return best;
}
