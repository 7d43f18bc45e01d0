/**
 * What a failover is made of, frozen in its catalog row at the request (failovers.spec): the VM's
 * recorded hardware, its disks in boot order with their bus, its NICs with their failover settings,
 * and how readiness is judged. Later edits of the VM's configuration change later failovers only.
 */
import type { VmHardwareRow } from '../catalog/failovers.js';
import type { DiskBus, NicModel, ReadyProbe, VmHardware } from './drivers/types.js';

export interface FailoverSpec {
  hardware: VmHardware;
  disks: { id: string; bus: DiskBus }[];
  nics: { mac: string; model: NicModel; settings: unknown; reportedAddresses: string[] }[];
  readyProbes: ReadyProbe[];
}

/** A VM with no recorded configuration: BIOS, 1 vCPU, 1 GiB, Linux, virtio, ready when its guest agent answers. */
export function defaultHardware(): VmHardwareRow {
  return { firmware: 'bios', secureBoot: false, cpus: 1, memoryMiB: 1024, guestOs: 'linux', disks: {}, readyProbes: [{ kind: 'guest-agent' }], source: 'default' };
}
