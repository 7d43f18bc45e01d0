/**
 * The test guest built with cloud-init disabled reaches ready with no seed at all: the readiness
 * report shows loopback only (nothing configured eth0), and the guest agent answers. This is the
 * guest for readiness probes that must not depend on our seed. Skipped only where
 * qemu-system-x86_64 or debootstrap is missing.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../service/guest/run.js';
import { readGuestFile } from './guest-files.js';
import { bootGuest } from './qemu-boot.js';
import type { TestGuest } from './test-guest.js';
import { guestSkipReason, testGuest } from './test-guest.js';

const skip = guestSkipReason();
const BootTimeoutMs = 15 * 60_000;

describe.skipIf(skip !== undefined)('test guest with cloud-init disabled', () => {
  let guest: TestGuest;
  let dir: string;

  beforeAll(async () => {
    guest = await testGuest({ firmware: 'bios', cloudInit: false });
    dir = await mkdtemp(join(tmpdir(), 'lifeboat-guest-noci-'));
  }, 40 * 60_000);
  afterAll(async () => { if (dir) await rm(dir, { recursive: true, force: true }); });

  it('carries /etc/cloud/cloud-init.disabled and boots to ready without a seed', async () => {
    const raw = join(dir, 'disk.raw');
    await run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', guest.image, raw]);
    expect(await readGuestFile(raw, '/etc/cloud/cloud-init.disabled')).toBeDefined();
    const vm = await bootGuest({ image: raw, firmware: 'bios', dir: join(dir, 'vm') });
    try {
      const report = await vm.waitReady(BootTimeoutMs);
      console.info(`BIOS guest without cloud-init: qemu start to LIFEBOAT-GUEST-READY in ${((Date.now() - vm.startedAt) / 1000).toFixed(0)} s (TCG)`);
      expect(report.addr.find((a) => a.ifname === 'lo')?.addr_info).toContainEqual(expect.objectContaining({ local: '127.0.0.1' }));
      expect(report.addr.find((a) => a.ifname === 'eth0')?.addr_info.filter((i) => i.family === 'inet') ?? []).toEqual([]);
      await vm.guestPing(120_000);
    } finally {
      await vm.stop();
    }
  }, BootTimeoutMs + 180_000);
});
