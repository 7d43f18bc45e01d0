/**
 * What the engine needs of a live source's cycle (agent/replicate/live.ts): one point in time of all
 * the VM's disks, each a read-only DiskImage beside its TrackedCycle (the changes since the last
 * acknowledged cycle; bitmapLost when the source lost track and the disk must be compared with its
 * replica), the consistency it was taken with, and the VM's configuration as the hypervisor says it.
 * The qemu source (qemu-view.ts), the hyperv source (hyperv-view.ts) and the libvirt source
 * (libvirt-view.ts) implement it.
 */
import type { DiskImage } from '../../shared/disk/index.js';
import type { HardwareConfig, NicConfig } from '../state/schema.js';
import type { TrackedCycle } from '../tracker/types.js';

export interface MachineConfig {
  hardware: HardwareConfig;
  nics: NicConfig[];
}

export interface LiveDiskView {
  image: DiskImage;
  cycle: TrackedCycle & { readonly bitmapLost: boolean };
  /** For status: where the disk is (qemu: its node; hyperv: its slot; libvirt: its target), what changes are counted from, the granularity (0: the source's own). */
  tracking: { node: string; bitmap: string; granularity: number };
}

export interface LiveView {
  readonly kind: 'qemu' | 'hyperv' | 'libvirt';
  readonly disks: Map<string, LiveDiskView>;
  readonly consistency: 'crash' | 'application';
  readonly capturedMs: number;
  readonly warnings: string[];
  /** The VM's hardware and NICs as the hypervisor describes them now. */
  machine(): Promise<MachineConfig>;
  /** Abandons every cycle not committed, ends the view. */
  close(): Promise<void>;
}
