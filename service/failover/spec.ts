/**
 * What a failover is made of, frozen in its catalog row at the request (failovers.spec): the VM's
 * recorded hardware, its disks in boot order with their bus, its NICs with their failover settings,
 * and how readiness is judged. Later edits of the VM's configuration change later failovers only.
 */
import { join } from 'node:path';
import type { VmHardwareRow } from '../catalog/failovers.js';
import type { VmRow } from '../catalog/vms.js';
import type { DiskBus, NicModel, ReadyProbe, VmHardware } from './drivers/types.js';

export interface FailoverSpec {
  hardware: VmHardware;
  disks: { id: string; bus: DiskBus }[];
  nics: { mac: string; model: NicModel; settings: unknown; reportedAddresses: string[] }[];
  readyProbes: ReadyProbe[];
}

/** A VM with no recorded configuration: BIOS, 1 vCPU, 1 GiB, Linux, virtio, ready when its guest agent answers. */
export function defaultHardware(): VmHardwareRow {
  return { firmware: 'bios', secureBoot: false, cpus: 1, memoryMiB: 1024, guestOs: 'linux', disks: {}, readyProbes: [{ kind: 'guest-agent' }], source: 'default', sources: {} };
}

/**
 * The VM's own UEFI NVRAM (OVMF VARS) on its replica storage, beside its disks' directories: each
 * failover boots from a copy of it, so the guest's boot entries survive; without one, OVMF's template
 * (and the disk's removable-media fallback loader) is used.
 */
export function vmNvramPath(vm: Pick<VmRow, 'storageDir' | 'tenant' | 'name'>): string {
  return join(vm.storageDir, vm.tenant, vm.name, 'nvram.fd');
}
