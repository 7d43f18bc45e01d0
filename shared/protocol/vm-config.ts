/**
 * The VM configuration an agent reports with its registration (agent protocol §5.1 `hardware`,
 * `nics`, a disk's `bus`): the values, their limits and the parsers both sides use, so the agent
 * refuses at `protect` exactly what the service would refuse at registration. The service keeps the
 * values in its catalog beside an operator's edits (docs/failover.md "The VM's configuration").
 */
import { isIPv4, isIPv6 } from 'node:net';

export const Firmwares = ['bios', 'uefi'] as const;
export const GuestOses = ['linux', 'windows', 'other'] as const;
export const DiskBuses = ['virtio', 'scsi', 'sata', 'ide'] as const;
export const NicModels = ['virtio', 'e1000', 'rtl8139'] as const;
export type Firmware = (typeof Firmwares)[number];
export type GuestOs = (typeof GuestOses)[number];
export type DiskBus = (typeof DiskBuses)[number];
export type NicModelName = (typeof NicModels)[number];

export const MinCpus = 1;
export const MaxCpus = 240;
export const MinMemoryMiB = 64;
export const MaxMemoryMiB = 4 * 1024 * 1024;
export const MaxReportedNics = 32;
export const MaxAddressesPerReportedNic = 32;

const MacText = /^[0-9a-f]{2}([:-]?)[0-9a-f]{2}\1[0-9a-f]{2}\1[0-9a-f]{2}\1[0-9a-f]{2}\1[0-9a-f]{2}$/i;

/**
 * A unicast MAC as `52:54:00:12:34:56` (lower case, colons), from six hex pairs separated by `:`,
 * `-` or nothing; the all-zero and multicast (odd first octet) addresses are not a NIC's.
 */
export function parseMacAddress(text: string): { ok: true; mac: string } | { ok: false; reason: string } {
  const shown = JSON.stringify(text.slice(0, 40));
  if (!MacText.test(text)) return { ok: false, reason: `${shown} is not a MAC address (six hex pairs, e.g. 52:54:00:12:34:56)` };
  const hex = text.replace(/[:-]/g, '').toLowerCase();
  const mac = hex.match(/../g)!.join(':');
  if (/^0+$/.test(hex)) return { ok: false, reason: `${mac} is the all-zero MAC address` };
  if (parseInt(hex.slice(0, 2), 16) & 1) return { ok: false, reason: `${mac} is a multicast MAC address (its first octet is odd)` };
  return { ok: true, mac };
}

/**
 * An address a NIC has at the source: an IPv4 or IPv6 address with or without `/prefix` (1–32 or
 * 1–128). Returned as given, lower case; the service stores it in its canonical form.
 */
export function parseSourceAddress(text: string): { ok: true; address: string } | { ok: false; reason: string } {
  const shown = JSON.stringify(text.slice(0, 60));
  const slash = text.indexOf('/');
  const ip = slash < 0 ? text : text.slice(0, slash);
  if (ip.includes('%')) return { ok: false, reason: `${shown}: give the address without a zone index (%…)` };
  const family = isIPv4(ip) ? 4 : isIPv6(ip) ? 6 : 0;
  if (family === 0) return { ok: false, reason: `${shown} is not an IP address (e.g. 192.168.10.7/24 or 2001:db8::7/64)` };
  if (slash >= 0) {
    const prefix = text.slice(slash + 1);
    const max = family === 4 ? 32 : 128;
    if (!/^\d{1,3}$/.test(prefix) || Number(prefix) < 1 || Number(prefix) > max) return { ok: false, reason: `${shown}: the prefix must be 1 to ${max}` };
  }
  return { ok: true, address: text.toLowerCase() };
}
