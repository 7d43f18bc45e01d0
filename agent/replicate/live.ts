/**
 * The engine's side of a live source (docs/agent.md "Sources"): for a VM read through the qemu
 * source, one point-in-time view of all its disks per cycle (agent/sources/qemu-view.ts), the
 * consistency it was taken with, and what the engine records of each disk's tracking for status.
 * A bitmap found lost puts its disk back to a delta base against the service's digests.
 */
import { join } from 'node:path';
import { userMessage } from '../../shared/errors.js';
import type { VmConfig } from '../state/schema.js';
import type { AgentState } from '../state/store.js';
import { QemuVmView } from '../sources/qemu-view.js';
import type { ProgressBook } from './context.js';

/** The VM's qemu work directory: the fleecing overlays and qemu's NBD socket while a cycle runs. */
export function qemuWorkDir(state: AgentState, vm: string): string {
  return join(state.vmDir(vm), 'qemu');
}

export function isLive(config: VmConfig): config is VmConfig & { source: { kind: 'qemu' } } {
  return config.source?.kind === 'qemu';
}

/** Opens the VM's view for this cycle; freeze: an application-consistent point is due. */
export async function openLiveView(state: AgentState, config: VmConfig & { source: { kind: 'qemu' } }, freeze: boolean): Promise<QemuVmView> {
  const { source } = config;
  return QemuVmView.open({
    vm: config.name, qmpSocket: source.qmp, ...(source.guestAgent ? { guestAgentSocket: source.guestAgent } : {}), freeze,
    disks: config.disks.map((d) => ({ id: d.id, node: d.node ?? d.id })), workDir: qemuWorkDir(state, config.name),
    ...(source.granularity ? { granularity: source.granularity } : {}),
  });
}

/**
 * Records each disk's tracking and sends a disk whose bitmap was lost (qemu restarted without it, a
 * raw disk's bitmap after a restart, a VM restored from backup) back to a delta base: only blocks
 * that differ from the replica move. Returns the disks so sent.
 */
export async function noteTracking(book: ProgressBook, view: QemuVmView, nowIso: string): Promise<string[]> {
  const lost: string[] = [];
  await book.update((p) => {
    for (const [id, d] of view.disks) {
      const disk = p.disks[id];
      if (!disk) continue;
      const wasLost = d.cycle.bitmapLost;
      disk.tracking = { node: d.source.node, bitmap: d.cycle.liveBitmap, granularity: d.cycle.granularity || disk.tracking?.granularity || 0, lostAt: wasLost ? nowIso : disk.tracking?.lostAt ?? null };
      if (wasLost && disk.initial.state === 'done') {
        disk.resyncReason = `qemu dirty bitmap of node ${d.source.node} lost (qemu restarted without it, or the VM was restored): comparing with the replica`;
        disk.initial.state = 'pending';
        lost.push(id);
      }
    }
  });
  return lost;
}

/**
 * Reads the VM's machine through the view's QMP connection (and the guest's addresses when its agent
 * answered this cycle) and records it when it changed: the registration built from it differs, so the
 * engine registers the VM again and the service hears the change. A read that fails is a warning.
 */
export async function noteMachine(book: ProgressBook, view: QemuVmView, config: VmConfig & { source: { kind: 'qemu' } }, nowIso: string): Promise<void> {
  let machine;
  try {
    machine = await view.machine(view.guestAgentAnswered ? config.source.guestAgent : null);
  } catch (err) {
    view.warnings.push(`VM ${config.name}: reading its configuration over QMP: ${userMessage(err) ?? String(err)}`);
    return;
  }
  const old = book.progress.machine;
  if (old && JSON.stringify(old.hardware) === JSON.stringify(machine.hardware) && JSON.stringify(old.nics) === JSON.stringify(machine.nics)) return;
  await book.update((p) => { p.machine = { ...machine, readAt: nowIso }; });
}
