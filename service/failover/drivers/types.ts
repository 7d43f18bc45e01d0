/**
 * The one interface every failover driver implements (qemu here; hyperv and webhook later). A driver
 * runs inside a failover host process (service/failover/host.ts), never in the API: the VMs it starts
 * outlive the process that started them, so every step is idempotent and everything a step needs
 * later is written into the failover's work directory (`spec.json` and the files beside it), from
 * which a restarted host re-attaches (`attach`).
 *
 * Steps, in order: prepare → start → waitReady → (screenshot) → commit? → stop → cleanup.
 */

import type { PublicIpRule } from '../network/nat.js';
import type { GuestNetworkTexts } from '../network/readback.js';

/** How the primary VM is built; recorded per VM at protect, editable by the operator. */
export interface VmHardware {
  /** bios: SeaBIOS; uefi: OVMF with a per-VM NVRAM (VARS) file. */
  firmware: 'bios' | 'uefi';
  /** UEFI only: Secure Boot enforced (OVMF's secboot code and Microsoft keys in VARS). */
  secureBoot: boolean;
  cpus: number;
  memoryMiB: number;
  /** Picks defaults for buses and NIC models: virtio for linux, what Windows has drivers for. */
  guestOs: 'linux' | 'windows' | 'other';
}

export type DiskBus = 'virtio' | 'scsi' | 'sata' | 'ide';
export type NicModel = 'virtio' | 'e1000' | 'rtl8139';

/** A disk of the failed-over VM, in boot order, read from an NBD export of the chosen point. */
export interface FailoverDisk {
  /** The replica disk id. */
  id: string;
  bus: DiskBus;
  virtualSize: number;
  /** Where qemu's NBD client reads the point: a unix socket (same host) or TCP (TLS when not loopback). */
  nbd: { socket: string; exportName: string } | { host: string; port: number; exportName: string; tlsCredsDir?: string };
}

/** What a NIC is plugged into: a bridge the hoster granted, or a network made for one test run. */
export type NicAttachment =
  | { kind: 'bridge'; bridge: string; vlan?: number }
  /** An isolated network shared only by the VMs of one run (qemu socket multicast or a run bridge). */
  | { kind: 'isolated'; runId: string; group: string }
  /** No network at all (a NIC left unplugged). */
  | { kind: 'none' };

export interface FailoverNic {
  mac: string;
  model: NicModel;
  attachment: NicAttachment;
}

/** A readiness probe; ready is the first probe that answers (any of them). */
export type ReadyProbe =
  | { kind: 'guest-agent' }
  /** A line on the serial console matching this regular expression (source text). */
  | { kind: 'console'; pattern: string }
  | { kind: 'tcp'; host: string; port: number };

export interface PrepareInput {
  failoverId: string;
  /** The failover's own directory on the host; the driver owns everything inside it. */
  workDir: string;
  /** Process name shown in ps and in logs, e.g. `lifeboat-fo-<id>-<vm>`. */
  name: string;
  hardware: VmHardware;
  disks: FailoverDisk[];
  nics: FailoverNic[];
  /** Seed media to attach as CD-ROMs (NoCloud cidata ISO, config-2 ISO), already written. */
  seeds: string[];
  /** A fresh VM generation id (UUID) per failover, for `-device vmgenid`. */
  vmGenerationId: string;
  /** UEFI: the VM's own NVRAM file kept across failovers; copied into workDir when absent there. */
  nvramSource?: string;
}

/** The result of a readiness wait. */
export interface ReadyResult {
  ready: boolean;
  /** Which probe answered first, or why none did (timeout, qemu exited with the tail of its log). */
  detail: string;
  /** ms from start() returning until the probe answered. */
  elapsedMs: number;
}

export interface VmStatus {
  state: 'running' | 'paused' | 'stopped' | 'failed';
  /** For failed: the reason, from qemu's log when it died. */
  reason?: string;
  pid?: number;
}

export type GuestNetworkReport =
  | { source: 'console'; texts: GuestNetworkTexts }
  | { source: 'guest-agent'; interfaces: unknown };

export interface FailoverDriver {
  readonly kind: string;
  /** True when a committed VM still reads the point's layers (hyperv: children of them): the point stays pinned. */
  readonly commitKeepsPoint?: boolean;
  /** Makes the overlays (one per disk, backed by its NBD export), writes spec.json. Idempotent. */
  prepare(input: PrepareInput): Promise<void>;
  /** Starts the VM (detached: it outlives this process). Idempotent: a running VM is left alone. */
  start(workDir: string): Promise<void>;
  /** Re-attaches to a VM started earlier (after a host restart); its status. */
  status(workDir: string): Promise<VmStatus>;
  waitReady(workDir: string, probes: ReadyProbe[], timeoutMs: number): Promise<ReadyResult>;
  /** A PNG of the VM's screen. */
  screenshot(workDir: string): Promise<Buffer>;
  /** Makes the VM independent of the NBD export (qemu: block-stream of every disk). Idempotent. */
  commit(workDir: string): Promise<void>;
  /** Ends the VM (graceful power-down first when asked, then kill). Idempotent. */
  stop(workDir: string, options?: { graceful?: boolean; timeoutMs?: number }): Promise<void>;
  /** Deletes everything prepare made (overlays, NVRAM copy, seeds, sockets). Idempotent. */
  cleanup(workDir: string): Promise<void>;
  /**
   * What the guest's network really is, as the guest says it (optional): its own report on the serial
   * console (cloud-init's runcmd from our seed prints it) when one comes within timeoutMs, else the
   * guest agent's interfaces; undefined when the guest says nothing.
   */
  guestNetwork?(workDir: string, timeoutMs: number): Promise<GuestNetworkReport | undefined>;
  /**
   * Public addresses (docs/failover-public-ips.md) where the VM runs, for drivers whose VMs are not on
   * this machine's bridges (qemu's are: the host applies nftables itself). Puts exactly these 1:1
   * mappings in force for the failover (hyperv: the Hyper-V host's NAT; webhook: handed to the
   * orchestrator); an empty list takes them all away. The whole set each time, so it is idempotent.
   * Returns notes for the step: what of the set could not be carried there and why. Throws when
   * nothing could be applied.
   */
  publicIps?(workDir: string, rules: readonly (PublicIpRule & { mac: string | null })[]): Promise<string[]>;
  /** Lets go of this process's connections to the VMs (they keep running), so another host can attach. */
  close?(): Promise<void>;
}
