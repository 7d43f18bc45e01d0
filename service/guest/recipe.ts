/**
 * What decides a test guest image, and the keys that name its cached forms (docs/guest.md "Cache").
 * The root key covers the debootstrap root (suite, mirror, packages, and the code that makes and
 * configures it); the guest key adds the disk-building code and every option. Both hash the source
 * text of the modules that act on them, so editing the recipe makes a new image, never a stale one.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ErrInvalidArgument } from '../../shared/errors.js';

export type GuestFirmware = 'bios' | 'uefi';
export type GuestFormat = 'vhdx' | 'raw';

export interface GuestOptions {
  firmware: GuestFirmware;
  format: GuestFormat;
  /** Virtual size of the disk; default DefaultGuestSizeMiB. */
  sizeMiB?: number;
  /** false: cloud-init is installed but disabled (/etc/cloud/cloud-init.disabled). Default true. */
  cloudInit?: boolean;
}

export const GuestSuite = 'bookworm';
/** The Debian mirror debootstrap fetches from; LIFEBOAT_GUEST_MIRROR overrides it (a local mirror). */
export const DefaultGuestMirror = 'http://deb.debian.org/debian';
export const DefaultGuestSizeMiB = 2048;
export const MinGuestSizeMiB = 1536;
export const MaxGuestSizeMiB = 64 * 1024;

/**
 * Installed on top of debootstrap's minbase. python3-cffi-backend must be named or cloud-init stays
 * unconfigured; net-tools and resolvconf let cloud-init's eni renderer apply routes and DNS;
 * grub-efi-amd64-bin gives the UEFI loader (grub-mkstandalone runs inside the root at build time).
 */
export const GuestPackages: readonly string[] = [
  'linux-image-cloud-amd64', 'systemd-sysv', 'udev', 'cloud-init', 'python3-cffi-backend',
  'qemu-guest-agent', 'ifupdown', 'iproute2', 'net-tools', 'resolvconf', 'netbase', 'e2fsprogs',
  'grub-efi-amd64-bin',
];

export function guestMirror(): string {
  return process.env.LIFEBOAT_GUEST_MIRROR ?? DefaultGuestMirror;
}

/** Options with defaults filled in and checked; bad values are one clear line. */
export function normalizeGuestOptions(o: GuestOptions): Required<GuestOptions> {
  if (o.firmware !== 'bios' && o.firmware !== 'uefi') throw ErrInvalidArgument(`unknown firmware ${JSON.stringify(o.firmware)} (bios or uefi)`);
  if (o.format !== 'vhdx' && o.format !== 'raw') throw ErrInvalidArgument(`unknown format ${JSON.stringify(o.format)} (vhdx or raw)`);
  const sizeMiB = o.sizeMiB ?? DefaultGuestSizeMiB;
  if (!Number.isInteger(sizeMiB) || sizeMiB < MinGuestSizeMiB || sizeMiB > MaxGuestSizeMiB) {
    throw ErrInvalidArgument(`guest size ${sizeMiB} MiB is out of range (${MinGuestSizeMiB}..${MaxGuestSizeMiB})`);
  }
  return { firmware: o.firmware, format: o.format, sizeMiB, cloudInit: o.cloudInit ?? true };
}

function sourceText(file: string): string {
  return readFileSync(new URL(file, import.meta.url), 'utf8');
}

/** The modules whose code decides the debootstrap root. */
const RootSources = ['./recipe.ts', './root.ts', './configure.ts'];
/** The modules whose code decides the disk made from that root. */
const DiskSources = ['./build.ts', './layout.ts', './loop.ts', './nvram.ts'];

function hash(parts: readonly string[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(`${p.length}:`).update(p);
  return h.digest('hex').slice(0, 24);
}

/** The key of the debootstrap root tarball shared by every variant. */
export function rootRecipeKey(): string {
  return hash(['root-v1', GuestSuite, guestMirror(), GuestPackages.join(','), ...RootSources.map(sourceText)]);
}

/** The key of one finished guest image: the root's key plus the disk code and every option. */
export function guestRecipeKey(options: GuestOptions): string {
  const o = normalizeGuestOptions(options);
  return hash(['guest-v1', rootRecipeKey(), o.firmware, o.format, String(o.sizeMiB), String(o.cloudInit), ...DiskSources.map(sourceText)]);
}
