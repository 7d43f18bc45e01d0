/**
 * The qemu command line of a failed-over VM, from its spec (docs/failover-qemu.md has the mapping).
 * Input: the spec prepare wrote, the accelerator, the machine type, which disks are committed.
 * Output: argv for qemu-system-x86_64 (no shell). Pure, so the mapping is testable without qemu.
 * Failure: a spec the driver cannot express (a bridge NIC with a VLAN) is one LifeboatError line.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { ErrUnsupported } from '../../../shared/errors.js';
import { workFiles, type QemuSpec } from './qemu-files.js';
import type { DiskBus, FailoverDisk, FailoverNic, NicModel } from './types.js';

export const DefaultBridgeHelper = '/usr/lib/qemu/qemu-bridge-helper';
/** Seconds qemu's NBD client keeps retrying a lost export before failing I/O (a host restart). */
export const DefaultReconnectDelaySec = 300;

export interface QemuArgsContext {
  machine: string;
  accel: 'kvm' | 'tcg';
  defaultMemoryMiB: number;
  defaultCpus: number;
  /** Disk indexes whose overlays were streamed (commit): no NBD backing any more. */
  committed: ReadonlySet<number>;
  bridgeHelper?: string;
  reconnectDelaySec?: number;
}

/** qemu option values double their commas. */
export const esc = (value: string): string => value.replaceAll(',', ',,');

const nicDevice: Record<NicModel, string> = { virtio: 'virtio-net-pci', e1000: 'e1000', rtl8139: 'rtl8139' };

/** The multicast group and port of an isolated network: a hash of (run, group), so only that run's VMs meet. */
export function isolatedGroup(runId: string, group: string): { address: string; port: number } {
  const h = createHash('sha256').update(`${runId}\0${group}`).digest();
  // 230.0.0.0/8 lies in the unassigned part of 224/4; the socket is bound to loopback only.
  return { address: `230.${h[0]}.${h[1]}.${Math.max(1, h[2]!)}`, port: 20_000 + (h.readUInt16BE(3) % 40_000) };
}

export function qemuArgs(spec: QemuSpec, workDir: string, ctx: QemuArgsContext): string[] {
  const hw = spec.hardware;
  const secure = hw.firmware === 'uefi' && hw.secureBoot;
  const args: string[] = ['-name', `${esc(spec.name)},process=${esc(spec.name)}`, '-nodefaults', '-no-user-config', '-S'];

  // Machine, accelerator, CPUs and memory.
  args.push('-machine', secure ? `${ctx.machine},smm=on` : ctx.machine);
  args.push(...(ctx.accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg', '-cpu', 'max']));
  args.push('-m', `${hw.memoryMiB > 0 ? hw.memoryMiB : ctx.defaultMemoryMiB}M`, '-smp', String(hw.cpus > 0 ? hw.cpus : ctx.defaultCpus));
  // A guest that powers off leaves qemu paused in 'shutdown', so stop and status can tell it from a crash.
  args.push('-action', 'shutdown=pause');

  // Firmware: SeaBIOS is the default; OVMF's code read-only, the VM's VARS copy writable.
  if (spec.firmware) {
    if (secure) args.push('-global', 'driver=cfi.pflash01,property=secure,value=on');
    args.push('-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${esc(spec.firmware.code)}`);
    args.push('-drive', `if=pflash,format=raw,unit=1,file=${esc(spec.firmware.vars)}`);
  }

  // Disks in boot order: NBD node (the point) under a qcow2 overlay (the VM's writes), then the device.
  const buses = new Set(spec.disks.map((d) => d.bus));
  if (buses.has('scsi')) args.push('-device', 'virtio-scsi-pci,id=scsi0');
  const pc = !ctx.machine.includes('q35');
  if (pc && buses.has('sata')) args.push('-device', 'ahci,id=sata0');
  let sataPort = 0;
  spec.disks.forEach((disk, i) => {
    const committed = ctx.committed.has(i);
    if (!committed) args.push(...nbdBlockdev(disk, i, ctx.reconnectDelaySec ?? DefaultReconnectDelaySec));
    const overlay = `driver=qcow2,node-name=ov${i},file.driver=file,file.filename=${esc(spec.overlays[i]!)}`;
    args.push('-blockdev', committed ? overlay : `${overlay},backing=nbd${i}`);
    // SeaBIOS boots the disks in order; OVMF is left to the VM's own NVRAM entries: a bootindex makes
    // it rewrite BootOrder from qemu's list and drop the guest's entry (\EFI\debian\grubx64.efi).
    args.push('-device', `${diskDevice(disk.bus, pc, () => sataPort++)},drive=ov${i},id=disk${i}${spec.firmware ? '' : `,bootindex=${i + 1}`}`);
  });

  // Seeds as read-only CD-ROMs after the disks.
  spec.seeds.forEach((seed, i) => {
    args.push('-blockdev', `driver=raw,node-name=seed${i},read-only=on,file.driver=file,file.filename=${esc(seed)},file.read-only=on`);
    args.push('-device', `ide-cd,drive=seed${i},id=seed${i}`);
  });

  // NICs with their MACs, each on its own netdev.
  spec.nics.forEach((nic, i) => args.push(...nicArgs(nic, i, ctx.bridgeHelper ?? DefaultBridgeHelper)));

  // Console, monitor, guest agent, screen, generation id.
  args.push('-chardev', `file,id=console0,path=${esc(join(workDir, workFiles.console))},append=on`, '-serial', 'chardev:console0');
  args.push('-chardev', `socket,id=qmp0,path=${esc(join(workDir, workFiles.qmp))},server=on,wait=off`, '-mon', 'chardev=qmp0,mode=control');
  args.push('-chardev', `socket,id=qga0,path=${esc(join(workDir, workFiles.qga))},server=on,wait=off`);
  args.push('-device', 'virtio-serial-pci,id=vser0', '-device', 'virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0');
  args.push('-device', 'VGA', '-display', 'none', '-vnc', `unix:${esc(join(workDir, workFiles.vnc))}`);
  args.push('-device', `vmgenid,guid=${spec.vmGenerationId}`);
  return args;
}

function nbdBlockdev(disk: FailoverDisk, i: number, reconnectDelaySec: number): string[] {
  const common = `driver=nbd,node-name=nbd${i},export=${esc(disk.nbd.exportName)},reconnect-delay=${reconnectDelaySec},read-only=on`;
  if ('socket' in disk.nbd) return ['-blockdev', `${common},server.type=unix,server.path=${esc(disk.nbd.socket)}`];
  const out: string[] = [];
  let tls = '';
  if (disk.nbd.tlsCredsDir) {
    out.push('-object', `tls-creds-x509,id=tls${i},dir=${esc(disk.nbd.tlsCredsDir)},endpoint=client`);
    tls = `,tls-creds=tls${i}`;
  }
  out.push('-blockdev', `${common},server.type=inet,server.host=${disk.nbd.host},server.port=${disk.nbd.port}${tls}`);
  return out;
}

function diskDevice(bus: DiskBus, pc: boolean, nextSataPort: () => number): string {
  switch (bus) {
    case 'virtio': return 'virtio-blk-pci';
    case 'scsi': return 'scsi-hd,bus=scsi0.0';
    // q35's ICH9 AHCI serves ide-hd directly; pc gets its own AHCI controller for SATA.
    case 'sata': return pc ? `ide-hd,bus=sata0.${nextSataPort()}` : 'ide-hd';
    case 'ide': return 'ide-hd';
  }
}

function nicArgs(nic: FailoverNic, i: number, bridgeHelper: string): string[] {
  const device = `${nicDevice[nic.model]},mac=${nic.mac},id=nic${i}`;
  const a = nic.attachment;
  switch (a.kind) {
    case 'none':
      return ['-device', device];
    case 'isolated': {
      const g = isolatedGroup(a.runId, a.group);
      return ['-netdev', `socket,id=net${i},mcast=${g.address}:${g.port},localaddr=127.0.0.1`, '-device', `${device},netdev=net${i}`];
    }
    case 'bridge':
      if (a.vlan !== undefined) throw ErrUnsupported(`NIC ${nic.mac}: a VLAN on bridge ${a.bridge} is not supported by the qemu driver; grant a bridge that carries that VLAN untagged`);
      return ['-netdev', `bridge,id=net${i},br=${esc(a.bridge)},helper=${esc(bridgeHelper)}`, '-device', `${device},netdev=net${i}`];
  }
}
