/**
 * The real test guest, UEFI shape: a GPT disk whose EFI system partition holds the same GRUB at the
 * distribution's path and at the removable-media path, an NVRAM file whose Boot0000 names the
 * distribution's path on that partition, and OVMF booting exactly that entry (its BdsDxe lines on the
 * serial console say which) to the readiness report with the seed's network. Skipped only where
 * qemu-system-x86_64 or debootstrap is missing.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guidBytes } from '../../service/guest/nvram.js';
import { run } from '../../service/guest/run.js';
import { bootGuest } from './qemu-boot.js';
import type { TestGuest } from './test-guest.js';
import { guestSkipReason, testGuest } from './test-guest.js';

const skip = guestSkipReason();
const BuildTimeoutMs = 40 * 60_000;
const BootTimeoutMs = 15 * 60_000;

describe.skipIf(skip !== undefined)('test guest, UEFI', () => {
  let guest: TestGuest;
  let dir: string;
  let raw: string;

  beforeAll(async () => {
    guest = await testGuest({ firmware: 'uefi' });
    dir = await mkdtemp(join(tmpdir(), 'lifeboat-guest-uefi-'));
    raw = join(dir, 'disk.raw');
    await run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', guest.image, raw]);
  }, BuildTimeoutMs);
  afterAll(async () => { if (dir) await rm(dir, { recursive: true, force: true }); });

  it('has a GPT with an EFI system partition holding the loader at EFI/debian and EFI/BOOT, and an NVRAM entry for EFI/debian', async () => {
    const t = JSON.parse(await run('sfdisk', ['--json', raw])) as { partitiontable: { label: string; partitions: { start: number; size: number; type: string; uuid: string }[] } };
    expect(t.partitiontable.label).toBe('gpt');
    const [esp, root] = t.partitiontable.partitions;
    expect(esp!.type).toBe('C12A7328-F81F-11D2-BA4B-00A0C93EC93B');
    expect(root!.type).toBe('0FC63DAF-8483-4772-8E79-3D69D8477DE4');
    const image = `${raw}@@${esp!.start * 512}`;
    const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
    const distro = join(dir, 'grubx64.efi');
    const fallback = join(dir, 'BOOTX64.EFI');
    await run('mcopy', ['-i', image, '::/EFI/debian/grubx64.efi', distro], { env });
    await run('mcopy', ['-i', image, '::/EFI/BOOT/BOOTX64.EFI', fallback], { env });
    const loader = await readFile(distro);
    expect(loader.subarray(0, 2).toString('latin1')).toBe('MZ');
    expect(loader.equals(await readFile(fallback))).toBe(true);

    const vars = await readFile(guest.nvram!);
    expect(vars.length).toBe((await readFile('/usr/share/OVMF/OVMF_VARS_4M.fd')).length);
    expect(vars.includes(Buffer.from('Boot0000\0', 'utf16le'))).toBe(true);
    expect(vars.includes(Buffer.from('BootOrder\0', 'utf16le'))).toBe(true);
    expect(vars.includes(Buffer.from('\\EFI\\debian\\grubx64.efi\0', 'utf16le'))).toBe(true);
    expect(vars.includes(guidBytes(esp!.uuid))).toBe(true);
  }, 120_000);

  it('boots under OVMF through its NVRAM boot entry to ready with the seed\'s network', async () => {
    const mac = '52:54:00:4c:42:02';
    const vm = await bootGuest({ image: guest.image, nvram: guest.nvram, firmware: 'uefi', dir: join(dir, 'vm'), seed: { mac, address: '198.51.100.20/24', gateway: '198.51.100.1', dns: ['198.51.100.53'] } });
    try {
      const report = await vm.waitReady(BootTimeoutMs);
      console.info(`UEFI guest: qemu start to LIFEBOAT-GUEST-READY in ${((Date.now() - vm.startedAt) / 1000).toFixed(0)} s (TCG)`);
      expect(report.addr.find((a) => a.ifname === 'eth0')?.addr_info).toContainEqual(expect.objectContaining({ family: 'inet', local: '198.51.100.20', prefixlen: 24 }));
      expect(report.route).toContainEqual(expect.objectContaining({ dst: 'default', gateway: '198.51.100.1' }));
      const console_ = await readFile(vm.serialLog, 'latin1');
      expect(console_).toMatch(/BdsDxe: starting Boot0000 "debian" from HD\(1,GPT,[0-9A-F-]+,0x800,0x20000\)\/\\EFI\\debian\\grubx64\.efi/);
      await vm.guestPing(120_000);
    } finally {
      await vm.stop();
    }
  }, BootTimeoutMs + 180_000);
});
