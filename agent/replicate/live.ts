/**
 * The engine's side of a live source (docs/agent.md "Sources"): for a VM read through the qemu, the
 * hyperv or the libvirt source, one point-in-time view of all its disks per cycle
 * (agent/sources/qemu-view.ts, hyperv-view.ts, libvirt-view.ts), the consistency it was taken with, and what the engine records of each disk's
 * tracking for status. A disk whose tracking was lost goes back to a delta base against the service's
 * digests.
 */
import { join } from 'node:path';
import { userMessage } from '../../shared/errors.js';
import type { HypervRunner } from '../../shared/hyperv/runner.js';
import type { SourceConfig, VmConfig } from '../state/schema.js';
import type { AgentState } from '../state/store.js';
import { HypervVmView, hypervStateFile, sshRunner, type HypervSource } from '../sources/hyperv-view.js';
import { LibvirtVmView } from '../sources/libvirt-view.js';
import type { LiveView } from '../sources/live-view.js';
import { QemuVmView } from '../sources/qemu-view.js';
import type { ProgressBook } from './context.js';

export type LiveConfig = VmConfig & { source: SourceConfig & { kind: 'qemu' | 'hyperv' | 'libvirt' } };

/** The VM's qemu work directory: the fleecing overlays and qemu's NBD socket while a cycle runs. */
export function qemuWorkDir(state: AgentState, vm: string): string {
  return join(state.vmDir(vm), 'qemu');
}

/** The libvirt source's default work directory: each cycle's scratch files and NBD socket. */
export function libvirtWorkDir(state: AgentState, vm: string): string {
  return join(state.vmDir(vm), 'libvirt');
}

export function isLive(config: VmConfig): config is LiveConfig {
  return config.source?.kind === 'qemu' || config.source?.kind === 'hyperv' || config.source?.kind === 'libvirt';
}

/** Makes the runner of a hyperv source (tests give a recording one). */
export type HypervRunnerFactory = (source: HypervSource) => HypervRunner;

/**
 * Opens the VM's view for this cycle; freeze: an application-consistent point is due (qemu: through
 * the guest agent; libvirt: domfsfreeze; a hyperv checkpoint is a production one whenever the guest
 * can give it). startIfOff (the final cycle of a planned failover): a libvirt domain shut off is
 * started paused to be read, and destroyed after.
 */
export async function openLiveView(state: AgentState, config: LiveConfig, freeze: boolean, hypervRunner: HypervRunnerFactory = sshRunner, startIfOff = false): Promise<LiveView> {
  const { source } = config;
  if (source.kind === 'libvirt') {
    return LibvirtVmView.open({
      vm: config.name, domain: source.domain, connect: source.connect, workDir: source.workDir, freeze, startIfOff,
      disks: config.disks.map((d) => ({ id: d.id, target: d.node ?? d.id })),
    });
  }
  if (source.kind === 'hyperv') {
    return HypervVmView.open({
      vm: config.name, source, runner: hypervRunner(source), stateFile: hypervStateFile(state.vmDir(config.name)),
      disks: config.disks.map((d) => ({ id: d.id, slot: d.node ?? d.id })),
    });
  }
  return QemuVmView.open({
    vm: config.name, qmpSocket: source.qmp, ...(source.guestAgent ? { guestAgentSocket: source.guestAgent } : {}), freeze,
    disks: config.disks.map((d) => ({ id: d.id, node: d.node ?? d.id })), workDir: qemuWorkDir(state, config.name),
    ...(source.granularity ? { granularity: source.granularity } : {}),
  });
}

/** Whether an application-consistent point through the source itself can be asked for. */
export function sourceQuiesces(config: LiveConfig): boolean {
  if (config.source.kind === 'libvirt') return config.source.guestAgent;
  return config.source.kind === 'hyperv' || config.source.guestAgent !== null;
}

/**
 * Records each disk's tracking and sends a disk whose tracking was lost (qemu restarted without its
 * bitmap, a raw disk's bitmap after a restart, a VM restored from backup; a Hyper-V reference point
 * that is gone or does not know the disk) back to a delta base: only blocks that differ from the
 * replica move. Returns the disks so sent.
 */
export async function noteTracking(book: ProgressBook, view: LiveView, nowIso: string): Promise<string[]> {
  const lost: string[] = [];
  await book.update((p) => {
    for (const [id, d] of view.disks) {
      const disk = p.disks[id];
      if (!disk) continue;
      const wasLost = d.cycle.bitmapLost;
      // A hyperv VM's first cycle has no reference point yet: nothing was lost.
      const found = wasLost && (view.kind === 'qemu' || d.tracking.bitmap !== '');
      disk.tracking = { node: d.tracking.node, bitmap: d.tracking.bitmap, granularity: d.tracking.granularity || disk.tracking?.granularity || 0, lostAt: found ? nowIso : disk.tracking?.lostAt ?? null };
      if (wasLost && disk.initial.state === 'done') {
        disk.resyncReason = view.kind === 'qemu'
          ? `qemu dirty bitmap of node ${d.tracking.node} lost (qemu restarted without it, or the VM was restored): comparing with the replica`
          : view.kind === 'libvirt'
          ? `no libvirt checkpoint of ours covers disk ${d.tracking.node} (deleted, or the domain was restored or moved): comparing with the replica`
          : `Hyper-V reference point ${d.tracking.bitmap || '(none)'} is gone or does not track ${d.tracking.node}: comparing with the replica`;
        disk.initial.state = 'pending';
        lost.push(id);
      } else if (wasLost && view.kind === 'hyperv' && disk.initial.state === 'running') {
        // A base begun from an earlier checkpoint that no reference point covers: its chunks so far
        // are as of that checkpoint and no log can bring them forward, so it starts again from this one.
        disk.initial.state = 'pending';
      }
    }
  });
  return lost;
}

/**
 * Reads the VM's machine through the view (qemu: its QMP connection, and the guest's addresses when
 * its agent answered this cycle; hyperv: Get-VM and KVP) and records it when it changed: the
 * registration built from it differs, so the engine registers the VM again and the service hears the
 * change. A read that fails is a warning.
 */
export async function noteMachine(book: ProgressBook, view: LiveView, config: LiveConfig, nowIso: string): Promise<void> {
  let machine;
  try {
    machine = await view.machine();
  } catch (err) {
    view.warnings.push(`VM ${config.name}: reading its configuration from the ${({ qemu: 'QMP socket', hyperv: 'Hyper-V host', libvirt: 'libvirt domain' } as const)[config.source.kind]}: ${userMessage(err) ?? String(err)}`);
    return;
  }
  const old = book.progress.machine;
  if (old && JSON.stringify(old.hardware) === JSON.stringify(machine.hardware) && JSON.stringify(old.nics) === JSON.stringify(machine.nics)) return;
  await book.update((p) => { p.machine = { ...machine, readAt: nowIso }; });
}
