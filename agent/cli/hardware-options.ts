/**
 * protect's options for the VM's hardware and NICs at the source (--firmware, --secure-boot, --cpus,
 * --memory, --guest-os, --disk-bus, --nic). Each parser refuses what the service would refuse at
 * registration (shared/protocol/vm-config.ts) as one line naming the option, before anything is stored.
 */
import { ErrInvalidArgument } from '../../shared/errors.js';
import type { DiskBus, Firmware, GuestOs, NicModelName } from '../../shared/protocol/vm-config.js';
import {
  DiskBuses, Firmwares, GuestOses, MaxAddressesPerReportedNic, MaxCpus, MaxMemoryMiB, MaxReportedNics, MinCpus, MinMemoryMiB, NicModels,
  parseMacAddress, parseSourceAddress,
} from '../../shared/protocol/vm-config.js';
import { parseSize } from '../../shared/units.js';
import type { HardwareConfig, NicConfig } from '../state/schema.js';

export interface HardwareOptions {
  firmware?: string;
  secureBoot?: boolean;
  cpus?: string;
  memory?: string;
  guestOs?: string;
  diskBus?: string;
  nic?: string[];
}

const MiB = 1024 * 1024;

function oneOf<T extends string>(option: string, text: string, values: readonly T[]): T {
  if (!(values as readonly string[]).includes(text)) throw ErrInvalidArgument(`${option} "${text.slice(0, 40)}" must be ${values.slice(0, -1).join(', ')} or ${values.at(-1)}`);
  return text as T;
}

export function parseCpus(text: string): number {
  const n = Number(text);
  if (!/^\d{1,3}$/.test(text) || n < MinCpus || n > MaxCpus) throw ErrInvalidArgument(`--cpus "${text.slice(0, 40)}" must be a whole number of vCPUs from ${MinCpus} to ${MaxCpus}`);
  return n;
}

/** A size with its unit (4G, 512M, 4096MiB): whole MiB from 64 MiB to 4 TiB. A bare number is refused (MiB or bytes?). */
export function parseMemoryMiB(text: string): number {
  if (!/^\s*\d+(\.\d+)?\s*[a-z]+\s*$/i.test(text)) throw ErrInvalidArgument(`--memory "${text.slice(0, 40)}" must be a size with its unit, e.g. 4G or 512M`);
  const bytes = parseSize(text, '--memory');
  if (bytes % MiB !== 0) throw ErrInvalidArgument(`--memory "${text}" must be a whole number of MiB`);
  const mib = bytes / MiB;
  if (mib < MinMemoryMiB || mib > MaxMemoryMiB) throw ErrInvalidArgument(`--memory "${text}" must be from ${MinMemoryMiB}M to ${MaxMemoryMiB / (1024 * 1024)}T`);
  return mib;
}

/** `MAC[,model=MODEL][,ip=ADDR[/PREFIX]]…`: one NIC of the VM at the source. */
export function parseNic(text: string): NicConfig {
  const [first = '', ...parts] = text.split(',');
  const mac = parseMacAddress(first.trim());
  if (!mac.ok) throw ErrInvalidArgument(`--nic ${mac.reason}`);
  const nic: NicConfig = { mac: mac.mac, addresses: [] };
  for (const part of parts) {
    const eq = part.indexOf('=');
    const [key, value] = eq < 0 ? [part.trim(), ''] : [part.slice(0, eq).trim(), part.slice(eq + 1).trim()];
    if (key === 'ip') {
      const a = parseSourceAddress(value);
      if (!a.ok) throw ErrInvalidArgument(`--nic ${mac.mac} ip=: ${a.reason}`);
      if (!nic.addresses.includes(a.address)) nic.addresses.push(a.address);
    } else if (key === 'model') {
      if (nic.model !== undefined) throw ErrInvalidArgument(`--nic ${mac.mac}: model= is given twice`);
      nic.model = oneOf(`--nic ${mac.mac} model=`, value, NicModels) as NicModelName;
    } else {
      throw ErrInvalidArgument(`--nic ${mac.mac}: "${part.slice(0, 40)}" is not model=MODEL or ip=ADDRESS/PREFIX`);
    }
  }
  if (nic.addresses.length > MaxAddressesPerReportedNic) throw ErrInvalidArgument(`--nic ${mac.mac}: at most ${MaxAddressesPerReportedNic} ip= addresses`);
  return nic;
}

/** Every --nic given: the VM's whole NIC list, each MAC once. */
export function parseNics(texts: readonly string[]): NicConfig[] {
  if (texts.length > MaxReportedNics) throw ErrInvalidArgument(`--nic: at most ${MaxReportedNics} NICs`);
  const nics = texts.map(parseNic);
  const dup = nics.find((n, i) => nics.findIndex((m) => m.mac === n.mac) !== i);
  if (dup) throw ErrInvalidArgument(`--nic ${dup.mac} is given twice`);
  return nics;
}

/**
 * The VM's hardware after these options: a field not given keeps its value. --secure-boot needs
 * UEFI firmware (given now or before).
 */
export function mergeHardware(opts: HardwareOptions, existing: HardwareConfig | undefined): HardwareConfig | undefined {
  const next: HardwareConfig = { ...existing };
  if (opts.firmware !== undefined) next.firmware = oneOf('--firmware', opts.firmware, Firmwares) as Firmware;
  if (opts.secureBoot !== undefined) next.secureBoot = opts.secureBoot;
  if (opts.cpus !== undefined) next.cpus = parseCpus(opts.cpus);
  if (opts.memory !== undefined) next.memoryMiB = parseMemoryMiB(opts.memory);
  if (opts.guestOs !== undefined) next.guestOs = oneOf('--guest-os', opts.guestOs, GuestOses) as GuestOs;
  if (opts.diskBus !== undefined) next.diskBus = oneOf('--disk-bus', opts.diskBus, DiskBuses) as DiskBus;
  if (next.secureBoot && next.firmware !== 'uefi') {
    throw ErrInvalidArgument(opts.secureBoot ? '--secure-boot needs --firmware uefi' : `--firmware ${next.firmware ?? '(not given)'}: the VM has Secure Boot, which needs uefi (add --no-secure-boot)`);
  }
  return Object.keys(next).length > 0 ? next : undefined;
}
