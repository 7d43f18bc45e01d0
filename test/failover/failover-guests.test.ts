/**
 * Failovers of the other guest shapes, and a failover host killed under a running guest:
 * - a two-disk UEFI VM (GPT, EFI system partition, its own NVRAM boot entry) boots under OVMF from the
 *   latest cycle, and both disks show that same cycle;
 * - a guest with cloud-init disabled reaches ready by its guest agent (ready does not mean "our seed
 *   ran");
 * - the failover host runs as its own process (`lifeboat-service failover-host`); it is SIGKILLed while
 *   the guest writes and started again: the guest keeps running (qemu's NBD client reconnects) and
 *   every write it made survives.
 * Skipped only where qemu-system-x86_64 is missing (said on stderr).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeGuestFile } from '../guest/guest-files.js';
import { testGuest } from '../guest/test-guest.js';
import { referee } from '../helpers.js';
import { FailoverScenario, must, qemuAvailable, withGuestAgent } from './failover-harness.js';

const hasQemu = qemuAvailable('the failover guest tests');

const MinuteMs = 60_000;
const BootMs = 15 * MinuteMs;

const guest = withGuestAgent;

/** Runs a shell line in the guest; its stdout. */
async function sh(workDir: string, line: string): Promise<string> {
  const r = await guest(workDir, (ga) => ga.exec('/bin/sh', ['-c', line], { timeoutMs: 60_000 }));
  if (r.exitCode !== 0) throw new Error(`guest: ${line}: exit ${r.exitCode}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

describe.skipIf(!hasQemu)('failover of other guests', () => {
  let s: FailoverScenario;

  beforeAll(async () => {
    s = await FailoverScenario.start();
  }, 5 * MinuteMs);

  afterAll(async () => {
    await s?.stop();
  }, 5 * MinuteMs);

  it('boots a two-disk UEFI VM through its own NVRAM entry, both disks at one cycle', async () => {
    const g = await testGuest({ firmware: 'uefi', format: 'raw' });
    const boot = join(s.env.dir, 'app01-boot.raw');
    const data = join(s.env.dir, 'app01-data.raw');
    execFileSync('cp', ['--sparse=always', g.image, boot]);
    await referee('qemu-img', ['create', '-q', '-f', 'raw', data, '64M']);
    await s.protect('app01', [boot, data]);
    await s.replicate();
    // One agent cycle changes both disks: a marker file in the root filesystem, a pattern on the data disk.
    await writeGuestFile(boot, '/root/cycle', 'c2\n');
    const pattern = join(s.env.dir, 'pattern');
    await writeFile(pattern, Buffer.alloc(1 << 20, 0xc2));
    await referee('qemu-io', ['-f', 'raw', '-c', `write -s ${pattern} 0 1M`, data]);
    await s.replicate();
    must(await s.api('PUT', '/v1/tenants/acme/vms/app01/hardware', { firmware: 'uefi', cpus: 1, memoryMiB: 1024, guestOs: 'linux', disks: { disk0: { bus: 'virtio', order: 0 }, disk1: { bus: 'virtio', order: 1 } } }), 'hardware');
    must(await s.api('POST', '/v1/tenants/acme/vms/app01/nvram', { path: g.nvram }), 'nvram');
    const r = must(await s.api('POST', '/v1/tenants/acme/vms/app01/failovers', { kind: 'test', point: 'latest' }), 'test failover');
    const ready = await s.waitFor(r.body.id, (x) => x.state === 'ready', BootMs);
    expect(ready.point.cycle).not.toBeNull();
    const wd = s.workDir(ready.id);
    expect(await sh(wd, 'cat /root/cycle')).toBe('c2\n');
    expect(await sh(wd, 'test -d /sys/firmware/efi && echo uefi')).toBe('uefi\n');
    // The second disk, read in the guest, holds that cycle's pattern.
    const md5 = createHash('md5').update(Buffer.alloc(1 << 20, 0xc2)).digest('hex');
    expect((await sh(wd, 'head -c 1048576 /dev/vdb | md5sum')).split(' ')[0]).toBe(md5);
    // OVMF started the distribution's loader from the VM's own NVRAM entry.
    expect(await readFile(join(wd, 'console.log'), 'utf8')).toMatch(/Boot0000 "debian"/);
    must(await s.api('POST', `/v1/failovers/${ready.id}/stop`, {}), 'stop');
    expect((await s.waitFor(ready.id, (x) => x.endedAt !== null, 3 * MinuteMs)).state).toBe('stopped');
  }, 40 * MinuteMs);

  it('reaches ready by the guest agent in a guest whose cloud-init is disabled', async () => {
    const g = await testGuest({ firmware: 'bios', format: 'raw', cloudInit: false });
    const disk = join(s.env.dir, 'plain01.raw');
    execFileSync('cp', ['--sparse=always', g.image, disk]);
    await s.protect('plain01', [disk]);
    await s.replicate();
    const r = must(await s.api('POST', '/v1/tenants/acme/vms/plain01/failovers', { kind: 'test', point: 'latest' }), 'test failover');
    const ready = await s.waitFor(r.body.id, (x) => x.state === 'ready', BootMs);
    expect(ready.steps.find((x) => x.step === 'wait-ready')?.detail).toMatch(/guest agent/i);
    expect(await sh(s.workDir(ready.id), 'test -f /etc/cloud/cloud-init.disabled && echo disabled')).toBe('disabled\n');
    must(await s.api('POST', `/v1/failovers/${ready.id}/stop`, {}), 'stop');
    await s.waitFor(ready.id, (x) => x.endedAt !== null, 3 * MinuteMs);
  }, 40 * MinuteMs);
});

describe.skipIf(!hasQemu)('a failover host killed under a running guest', () => {
  let s: FailoverScenario;

  beforeAll(async () => {
    s = await FailoverScenario.start({ externalHost: true });
  }, 5 * MinuteMs);

  afterAll(async () => {
    await s?.stop();
  }, 5 * MinuteMs);

  it('keeps the guest running through a SIGKILL of its host, and keeps every write', async () => {
    let host = await s.startHostProcess();
    const g = await testGuest({ firmware: 'bios', format: 'raw' });
    const disk = join(s.env.dir, 'web02.raw');
    execFileSync('cp', ['--sparse=always', g.image, disk]);
    await s.protect('web02', [disk]);
    await s.replicate();
    const r = must(await s.api('POST', '/v1/tenants/acme/vms/web02/failovers', { kind: 'test', point: 'latest' }), 'test failover');
    const ready = await s.waitFor(r.body.id, (x) => x.state === 'ready', BootMs);
    const wd = s.workDir(ready.id);
    // The guest writes 150 numbered, synced lines (and reads the disk) for about half a minute.
    await guest(wd, (ga) => ga.exec('/bin/sh', ['-c', 'nohup sh -c \'i=0; while [ $i -lt 150 ]; do echo $i >> /root/log; sync; cat /usr/bin/* > /dev/null 2>&1; i=$((i+1)); sleep 0.2; done; echo done > /root/log.done\' > /dev/null 2>&1 &']));
    await new Promise((res) => setTimeout(res, 3000));
    host.kill('SIGKILL');
    await new Promise((res) => host.once('exit', res));
    await new Promise((res) => setTimeout(res, 5000));
    host = await s.startHostProcess();
    // The guest finished its loop and every line is there, in order.
    // About half a minute on an idle machine; a loaded one (TCG guests of other tests on 2 cores) takes several.
    const deadline = Date.now() + 15 * MinuteMs;
    while (!(await sh(wd, 'cat /root/log.done 2>/dev/null || true')).includes('done')) {
      if (Date.now() > deadline) throw new Error(`the guest's writer did not finish in 15 minutes; its log has ${(await sh(wd, 'wc -l < /root/log')).trim()} lines`);
      await new Promise((res) => setTimeout(res, 2000));
    }
    const lines = (await sh(wd, 'cat /root/log')).trim().split('\n');
    expect(lines).toEqual(Array.from({ length: 150 }, (_, i) => String(i)));
    expect((await s.api('GET', `/v1/failovers/${ready.id}`)).body.state).toBe('ready');
    must(await s.api('POST', `/v1/failovers/${ready.id}/stop`, {}), 'stop');
    expect((await s.waitFor(ready.id, (x) => x.endedAt !== null, 3 * MinuteMs)).state).toBe('stopped');
    host.kill('SIGTERM');
    await new Promise((res) => host.once('exit', res));
  }, 40 * MinuteMs);
});
