/**
 * The real test guest, BIOS shape: the cached image is a valid VHDX with an MBR partition table,
 * a bootable partition, syslinux's MBR code and extlinux installed; files written offline into its
 * raw form are read back offline and by the running guest; it boots through SeaBIOS and its own
 * bootloader under TCG from a qcow2 overlay with a NoCloud seed, reports the seed's network on the
 * serial console, and its guest agent answers. Skipped only where qemu-system-x86_64 or debootstrap
 * is missing. The image comes from the guest cache (built on first use: minutes).
 */
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SyslinuxMbr } from '../../service/guest/build.js';
import { run } from '../../service/guest/run.js';
import { readGuestFile, writeGuestFile } from './guest-files.js';
import { bootGuest } from './qemu-boot.js';
import type { TestGuest } from './test-guest.js';
import { guestSkipReason, testGuest } from './test-guest.js';

const skip = guestSkipReason();
if (skip) console.warn(`test guest tests skipped: ${skip}`);
const BuildTimeoutMs = 40 * 60_000;
const BootTimeoutMs = 15 * 60_000;

describe.skipIf(skip !== undefined)('test guest, BIOS', () => {
  let guest: TestGuest;
  let dir: string;
  let raw: string;

  beforeAll(async () => {
    guest = await testGuest({ firmware: 'bios' });
    dir = await mkdtemp(join(tmpdir(), 'lifeboat-guest-test-'));
    raw = join(dir, 'disk.raw');
    await run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', guest.image, raw]);
  }, BuildTimeoutMs);
  afterAll(async () => { if (dir) await rm(dir, { recursive: true, force: true }); });

  it('is a valid VHDX holding an MBR disk with a bootable partition, syslinux MBR code and extlinux', async () => {
    const info = JSON.parse(await run('qemu-img', ['info', '--output=json', guest.image])) as { format: string; 'virtual-size': number };
    expect(info.format).toBe('vhdx');
    expect(info['virtual-size']).toBe(2048 * 1024 * 1024);
    await run('qemu-img', ['check', '-f', 'vhdx', guest.image]);

    const table = JSON.parse(await run('sfdisk', ['--json', raw])) as { partitiontable: { label: string; partitions: { start: number; type: string; bootable?: boolean }[] } };
    expect(table.partitiontable.label).toBe('dos');
    expect(table.partitiontable.partitions).toHaveLength(1);
    expect(table.partitiontable.partitions[0]).toMatchObject({ start: 2048, type: '83', bootable: true });
    const mbr = await readHead(raw, 512);
    expect(mbr.readUInt16LE(510)).toBe(0xaa55);
    expect(mbr.subarray(0, 440).equals((await readFile(SyslinuxMbr)).subarray(0, 440))).toBe(true);

    expect(await readGuestFile(raw, '/boot/extlinux/ldlinux.sys')).toBeDefined();
    const conf = (await readGuestFile(raw, '/boot/extlinux/extlinux.conf'))!.toString();
    expect(conf).toMatch(/APPEND root=UUID=[0-9a-f-]{36} .*console=ttyS0.*net\.ifnames=0/);
    expect((await readGuestFile(raw, '/etc/cloud/cloud.cfg.d/90-lifeboat.cfg'))!.toString()).toContain('datasource_list: [ NoCloud, ConfigDrive, None ]');
    expect(await readGuestFile(raw, '/etc/cloud/cloud-init.disabled')).toBeUndefined();
    expect((await readGuestFile(raw, '/etc/shadow'))!.toString()).toMatch(/^root:!/m);
    const features = await run('dumpe2fs', ['-h', `${raw}?offset=${2048 * 512}`]);
    expect(features).not.toMatch(/features:.*\b64bit\b/);
  }, 120_000);

  it('writes a file into the guest filesystem offline and reads it back; a missing file is undefined', async () => {
    await writeGuestFile(raw, '/root/marker', 'first\n');
    await writeGuestFile(raw, '/root/marker', 'second marker\n');
    expect((await readGuestFile(raw, '/root/marker'))!.toString()).toBe('second marker\n');
    expect(await readGuestFile(raw, '/root/no-such-file')).toBeUndefined();
    await expect(writeGuestFile(raw, '/no-such-dir/x', 'x')).rejects.toThrow(/did not take/);
    await run('e2fsck', ['-fn', `${raw}?offset=${2048 * 512}`]);
  }, 120_000);

  it('boots through its own bootloader to ready with the seed\'s network; the guest agent answers and sees the marker', async () => {
    const mac = '52:54:00:4c:42:01';
    const vm = await bootGuest({ image: raw, firmware: 'bios', dir: join(dir, 'vm'), seed: { mac, address: '192.0.2.10/24', gateway: '192.0.2.1', dns: ['192.0.2.53'] } });
    try {
      const report = await vm.waitReady(BootTimeoutMs);
      const seconds = (Date.now() - vm.startedAt) / 1000;
      console.info(`BIOS guest: qemu start to LIFEBOAT-GUEST-READY in ${seconds.toFixed(0)} s (TCG)`);
      const eth0 = report.addr.find((a) => a.ifname === 'eth0');
      expect(eth0?.address).toBe(mac);
      expect(eth0?.addr_info).toContainEqual(expect.objectContaining({ family: 'inet', local: '192.0.2.10', prefixlen: 24 }));
      expect(report.route).toContainEqual(expect.objectContaining({ dst: 'default', gateway: '192.0.2.1', dev: 'eth0' }));
      expect(report.resolvConf).toMatch(/^nameserver 192\.0\.2\.53$/m);
      await vm.guestPing(120_000);
      expect((await vm.readFile('/root/marker')).toString()).toBe('second marker\n');
      expect((await readFile(vm.serialLog, 'utf8'))).toContain('SYSLINUX');
    } finally {
      await vm.stop();
    }
  }, BootTimeoutMs + 180_000);
});

async function readHead(path: string, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(length);
    await fh.read(b, 0, length, 0);
    return b;
  } finally {
    await fh.close();
  }
}
