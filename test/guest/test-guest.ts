/**
 * testGuest: the cached test guest image for tests that need a real guest (failover, drills).
 * Built on first use (minutes: debootstrap, then seconds per variant), then shared by every test
 * process and checkout through the guest cache (service/guest/cache.ts); .ci/run builds the usual
 * variants before the tests. guestSkipReason() says why a machine cannot build or boot one.
 */
import { execFileSync } from 'node:child_process';
import { nvramPathFor } from '../../service/guest/build.js';
import { cachedGuest } from '../../service/guest/cache.js';
import type { GuestFirmware, GuestFormat } from '../../service/guest/recipe.js';

export interface TestGuest {
  /** The cached image: read-only for tests (boot it through an overlay, copy it to write). */
  image: string;
  /** Its OVMF VARS file (UEFI). */
  nvram?: string;
  firmware: GuestFirmware;
}

export async function testGuest(o: { firmware?: GuestFirmware; cloudInit?: boolean; format?: GuestFormat } = {}): Promise<TestGuest> {
  const firmware = o.firmware ?? 'bios';
  const image = await cachedGuest({
    firmware, format: o.format ?? 'vhdx', cloudInit: o.cloudInit ?? true,
    onProgress: (step, detail) => { if (process.env.LIFEBOAT_GUEST_VERBOSE) process.stderr.write(`test guest: ${step}${detail ? `: ${detail}` : ''}\n`); },
  });
  return { image, nvram: firmware === 'uefi' ? nvramPathFor(image) : undefined, firmware };
}

function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Why a real guest cannot be built and booted here, or undefined when it can. */
export function guestSkipReason(): string | undefined {
  if (!have('qemu-system-x86_64')) return 'qemu-system-x86_64 is not installed (Debian package qemu-system-x86)';
  if (!have('debootstrap')) return 'debootstrap is not installed (Debian package debootstrap)';
  return undefined;
}
