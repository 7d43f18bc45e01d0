/**
 * The qemu failover driver against real qemu: a one-sector guest (prints a marker on COM1 and halts)
 * served by qemu-nbd boots under TCG through QemuDriver; readiness by console, a screenshot that
 * decodes, re-attachment by a new driver object, commit (block-stream) checked with qemu-img, the
 * persistent dirty bitmap, a killed qemu reported as failed, and configuration errors as one line.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chooseAccel, probeAccel } from '../../service/failover/drivers/qemu-accel.js';
import { isolatedGroup, qemuArgs } from '../../service/failover/drivers/qemu-args.js';
import { probeUntil } from '../../service/failover/drivers/qemu-ready.js';
import { type QemuSpec } from '../../service/failover/drivers/qemu-files.js';
import { FailoverBitmap, QemuDriver } from '../../service/failover/drivers/qemu.js';
import type { PrepareInput } from '../../service/failover/drivers/types.js';
import { isLifeboatError } from '../../shared/errors.js';
import { execFileP, referee, scratchDir } from '../helpers.js';
import { BootDiskSize, BootMarker, decodePng, killLeftQemus, serveNbd, writeBootDisk, type NbdServer } from './qemu-helpers.js';

const hasQemuGa = (() => { try { execFileSync('qemu-ga', ['--version']); return true; } catch { return false; } })();
const hasQemu = (() => { try { execFileSync('qemu-system-x86_64', ['--version']); return true; } catch { return false; } })();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = execFileSync('cat', [`/proc/${pid}/stat`]).toString();
    return !/\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

function input(dir: string, nbd: NbdServer, name: string, extra: Partial<PrepareInput> = {}): PrepareInput {
  return {
    failoverId: name,
    workDir: join(dir, name),
    name: `lifeboat-fo-${name}`,
    hardware: { firmware: 'bios', secureBoot: false, cpus: 1, memoryMiB: 64, guestOs: 'other' },
    disks: [{ id: 'd0', bus: 'ide', virtualSize: BootDiskSize, nbd: { socket: nbd.socket, exportName: nbd.exportName } }],
    nics: [{ mac: '52:54:00:12:34:56', model: 'e1000', attachment: { kind: 'isolated', runId: name, group: 'g' } }],
    seeds: [],
    vmGenerationId: '8f2a1c3e-1b2d-4c5e-9f00-112233445566',
    ...extra,
  };
}

type BlockNode = { 'node-name': string; 'dirty-bitmaps'?: { name: string; count: number; persistent: boolean }[] };

describe.skipIf(!hasQemu)('QemuDriver (skipped only when qemu-system-x86_64 is missing)', () => {
  let dir: Awaited<ReturnType<typeof scratchDir>>;
  let nbd: NbdServer;
  let bootDisk: string;
  const stateDir = () => join(dir.path, 'state');

  beforeAll(async () => {
    dir = await scratchDir('lifeboat-qemu-');
    bootDisk = join(dir.path, 'boot.img');
    await writeBootDisk(bootDisk);
    nbd = await serveNbd(bootDisk, dir.path);
  });
  afterAll(async () => {
    if (dir) await killLeftQemus(dir.path);
    await nbd?.stop();
    await dir?.remove();
  });

  it('boots, is ready by console, screenshots, survives its driver, commits, keeps its bitmap, stops and cleans up', async () => {
    const vm = input(dir.path, nbd, 'vm1', { seeds: [] });
    const seed = join(dir.path, 'seed.iso');
    await execFileP('genisoimage', ['-quiet', '-o', seed, '-V', 'cidata', '-r', '-J', bootDisk]);
    vm.seeds = [seed];
    const driver = new QemuDriver({ stateDir: stateDir(), accel: 'auto' });

    await driver.prepare(vm);
    await driver.prepare(vm); // idempotent
    const info = JSON.parse(await referee('qemu-img', ['info', '--output=json', join(vm.workDir, 'disk0.qcow2')])) as Record<string, unknown>;
    expect(info['format']).toBe('qcow2');
    expect(info['backing-filename']).toBeUndefined();
    expect(info['virtual-size']).toBe(BootDiskSize);

    const t0 = Date.now();
    await driver.start(vm.workDir);
    const started = Date.now() - t0;
    await driver.start(vm.workDir); // idempotent: the running VM is left alone
    const accel = JSON.parse(await readFile(join(stateDir(), 'qemu-accel.json'), 'utf8')) as { accel: string };
    expect(['kvm', 'tcg']).toContain(accel.accel);

    const ready = await driver.waitReady(vm.workDir, [{ kind: 'console', pattern: BootMarker }, { kind: 'guest-agent' }], 60_000);
    expect(ready.ready, ready.detail).toBe(true);
    expect(ready.detail).toMatch(/console matched/);
    console.log(`qemu driver: start ${started} ms, ready ${ready.elapsedMs} ms after cont (${accel.accel})`);

    const png = await driver.screenshot(vm.workDir);
    const image = decodePng(png);
    expect(image.width).toBeGreaterThanOrEqual(320);
    expect(image.height).toBeGreaterThanOrEqual(200);
    expect(image.width).toBeLessThanOrEqual(4096);

    const st = await driver.status(vm.workDir);
    expect(st.state).toBe('running');
    const pid = st.pid!;
    expect(Number(await readFile(join(vm.workDir, 'qemu.pid'), 'utf8'))).toBe(pid);

    // The bitmap exists from before the first instruction and is persistent.
    const qmp1 = await driver.qmp(vm.workDir);
    const before = (await qmp1.execute<BlockNode[]>('query-named-block-nodes', { flat: true })).find((n) => n['node-name'] === 'ov0');
    expect(before?.['dirty-bitmaps']).toEqual([expect.objectContaining({ name: FailoverBitmap, persistent: true, count: 0 })]);

    // The driver object goes away; qemu does not. A new driver re-attaches by workDir.
    await driver.close();
    expect(alive(pid)).toBe(true);
    const again = new QemuDriver({ stateDir: stateDir(), accel: 'auto' });
    expect(await again.status(vm.workDir)).toEqual({ state: 'running', pid });

    // The NBD server restarts (as a failover host does): qemu's client reconnects and reads through.
    await nbd.stop();
    nbd = await serveNbd(bootDisk, dir.path);
    // (HMP qemu-io prints to qemu's stdout, which is qemu.log.)
    await (await again.qmp(vm.workDir)).hmp('qemu-io -d disk0 "read -P 0x80 65536 512"');
    const qemuLog = await readFile(join(vm.workDir, 'qemu.log'), 'utf8');
    expect(qemuLog).toMatch(/read 512\/512 bytes at offset 65536/);
    expect(qemuLog).not.toMatch(/Pattern verification failed/);

    // Commit: the overlay stops depending on the export; the NBD server can go.
    await again.commit(vm.workDir);
    await again.commit(vm.workDir); // idempotent
    await nbd.stop();
    await new Promise((r) => setTimeout(r, 500));
    expect((await again.status(vm.workDir)).state).toBe('running');
    const overlay = join(vm.workDir, 'disk0.qcow2');
    const after = JSON.parse(await referee('qemu-img', ['info', '-U', '--output=json', overlay])) as Record<string, unknown>;
    expect(after['backing-filename']).toBeUndefined();
    const cmp = await execFileP('qemu-img', ['compare', '-U', '-f', 'qcow2', '-F', 'raw', overlay, bootDisk]).catch((e: { stdout: string; stderr: string }) => e);
    expect(cmp.stdout + cmp.stderr).toBe('Images are identical.\n');

    // The bitmap stayed through block-stream and records a guest-side write.
    const qmp2 = await again.qmp(vm.workDir);
    const streamed = (await qmp2.execute<BlockNode[]>('query-named-block-nodes', { flat: true })).find((n) => n['node-name'] === 'ov0');
    const countAfterStream = streamed?.['dirty-bitmaps']?.find((b) => b.name === FailoverBitmap)?.count;
    expect(countAfterStream).toBeDefined();
    console.log(`qemu driver: dirty bitmap after block-stream counts ${countAfterStream} bytes`);
    await qmp2.hmp('qemu-io -d disk0 "write -P 0x5a 512k 64k"');
    const written = (await qmp2.execute<BlockNode[]>('query-named-block-nodes', { flat: true })).find((n) => n['node-name'] === 'ov0');
    expect(written?.['dirty-bitmaps']?.find((b) => b.name === FailoverBitmap)?.count).toBe(countAfterStream! + 65536);
    await qmp2.hmp('qemu-io -d disk0 "flush"');
    const cmp2 = await execFileP('qemu-img', ['compare', '-U', '-f', 'qcow2', '-F', 'raw', overlay, bootDisk]).catch((e: { stdout: string; stderr: string }) => e);
    expect(cmp2.stdout).toBe('Content mismatch at offset 524288!\n');

    // A TCP probe answers as soon as something listens.
    const listener = createServer((c) => c.end()).listen(0, '127.0.0.1');
    await once(listener, 'listening');
    const port = (listener.address() as AddressInfo).port;
    const byTcp = await again.waitReady(vm.workDir, [{ kind: 'tcp', host: '127.0.0.1', port }], 10_000);
    listener.close();
    expect(byTcp).toMatchObject({ ready: true, detail: `tcp 127.0.0.1:${port} answered` });

    // Stop: powerdown (this guest ignores it), quit, the process is gone.
    await again.stop(vm.workDir, { graceful: true, timeoutMs: 2_000 });
    expect(alive(pid)).toBe(false);
    expect(await again.status(vm.workDir)).toEqual({ state: 'stopped' });
    await again.stop(vm.workDir); // idempotent
    await again.commit(vm.workDir); // committed already: nothing to do, even with the VM down
    // quit stored the persistent bitmap in the overlay.
    expect(await referee('qemu-img', ['info', overlay])).toContain(FailoverBitmap);

    // A committed VM starts again with no NBD server, boots from its overlay, and keeps its bitmap.
    await again.start(vm.workDir);
    const reboot = await again.waitReady(vm.workDir, [{ kind: 'console', pattern: BootMarker }], 60_000);
    expect(reboot.ready, reboot.detail).toBe(true);
    expect((await readFile(join(vm.workDir, 'console.log'), 'utf8')).split(BootMarker).length - 1).toBe(2);
    const restarted = (await (await again.qmp(vm.workDir)).execute<BlockNode[]>('query-named-block-nodes', { flat: true })).find((n) => n['node-name'] === 'ov0');
    expect(restarted?.['dirty-bitmaps']?.find((b) => b.name === FailoverBitmap)?.count).toBe(countAfterStream! + 65536);
    expect(existsSync(join(vm.workDir, 'bitmap-reset.json'))).toBe(false);
    const pid2 = (await again.status(vm.workDir)).pid!;
    await again.stop(vm.workDir);
    expect(alive(pid2)).toBe(false);
    await again.cleanup(vm.workDir);
    await again.cleanup(vm.workDir);
    expect(existsSync(vm.workDir)).toBe(false);
    expect((await readdir(dir.path)).filter((f) => f.endsWith('.sock') && f !== 'nbd-boot.sock')).toEqual([]);
    await again.close();
  });

  it('a qemu killed with SIGKILL is failed, with a reason; waitReady gives up early', async () => {
    const server = await serveNbd(bootDisk, dir.path, 'crash');
    const vm = input(dir.path, server, 'vm2', { nics: [] });
    const driver = new QemuDriver({ stateDir: stateDir(), accel: 'tcg' });
    try {
      await driver.prepare(vm);
      await driver.start(vm.workDir);
      const { pid } = await driver.status(vm.workDir);
      process.kill(pid!, 'SIGKILL');
      const t0 = Date.now();
      const ready = await driver.waitReady(vm.workDir, [{ kind: 'console', pattern: 'never-printed' }], 60_000);
      expect(ready.ready).toBe(false);
      expect(Date.now() - t0).toBeLessThan(5_000);
      const st = await driver.status(vm.workDir);
      expect(st.state).toBe('failed');
      expect(st.reason).toBe(`qemu (pid ${pid}) exited: nothing in its log`);

      // Started again: the bitmap the killed qemu never stored is made anew, and the loss is recorded.
      await driver.start(vm.workDir);
      expect((await driver.status(vm.workDir)).state).toBe('running');
      expect(Object.keys(JSON.parse(await readFile(join(vm.workDir, 'bitmap-reset.json'), 'utf8')) as object)).toEqual(['d0']);
      await driver.cleanup(vm.workDir);
      expect(existsSync(vm.workDir)).toBe(false);
    } finally {
      await driver.close();
      await server.stop();
    }
  });

  it('a missing binary, an unknown machine type and a qemu that exits at start are one clear line each', async () => {
    const server = await serveNbd(bootDisk, dir.path, 'bad');
    try {
      const missing = new QemuDriver({ stateDir: stateDir(), accel: 'tcg', binary: '/nonexistent/qemu-system-x86_64' });
      const vm = input(dir.path, server, 'vm3', { nics: [] });
      await missing.prepare(vm);
      const err = await missing.start(vm.workDir).catch((e: unknown) => e);
      expect(isLifeboatError(err)).toBe(true);
      expect((err as Error).message).toBe('qemu.binary: /nonexistent/qemu-system-x86_64 not found (install qemu-system-x86 or set qemu.binary)');
      await expect(missing.check()).rejects.toThrow(/^qemu\.binary: \/nonexistent\/qemu-system-x86_64 not found$/);

      const badMachine = new QemuDriver({ stateDir: stateDir(), accel: 'tcg', machine: { bios: 'no-such-board' } });
      await expect(badMachine.check()).rejects.toThrow(/^qemu\.machine\.bios: .* no machine type 'no-such-board'$/);
      const err2 = await badMachine.start(vm.workDir).catch((e: unknown) => e);
      expect(isLifeboatError(err2)).toBe(true);
      expect((err2 as Error).message).toMatch(/^qemu \(machine no-such-board, tcg\) exited at start: .*unsupported machine type/);
      expect((err2 as Error).message).not.toContain('\n');
      await new QemuDriver({ stateDir: stateDir() }).check();
      await badMachine.cleanup(vm.workDir);

      const noImg = new QemuDriver({ stateDir: stateDir(), imgBinary: '/nonexistent/qemu-img' });
      await expect(noImg.prepare(input(dir.path, server, 'vm4'))).rejects.toThrow(/^qemu\.imgBinary: \/nonexistent\/qemu-img not found$/);
      await expect(new QemuDriver({ stateDir: stateDir() }).start(join(dir.path, 'never-prepared'))).rejects.toThrow(/no failover prepared here/);
    } finally {
      await server.stop();
    }
  });

  it('UEFI: prepare copies OVMF VARS into the work directory; Secure Boot starts on q35 with SMM', async () => {
    const server = await serveNbd(bootDisk, dir.path, 'uefi');
    const driver = new QemuDriver({ stateDir: stateDir(), accel: 'tcg' });
    try {
      const vm = input(dir.path, server, 'vm5', { nics: [], hardware: { firmware: 'uefi', secureBoot: true, cpus: 1, memoryMiB: 128, guestOs: 'windows' } });
      vm.disks[0]!.bus = 'sata';
      await driver.prepare(vm);
      const nvram = await readFile(join(vm.workDir, 'nvram.fd'));
      expect(nvram.equals(await readFile('/usr/share/OVMF/OVMF_VARS_4M.ms.fd'))).toBe(true);
      await driver.start(vm.workDir);
      expect((await driver.status(vm.workDir)).state).toBe('running');
      const machine = await (await driver.qmp(vm.workDir)).hmp('info qtree');
      expect(machine).toContain('ich9-ahci');
      await driver.cleanup(vm.workDir);
      expect(existsSync(vm.workDir)).toBe(false);
    } finally {
      await driver.close();
      await server.stop();
    }
  });

  it('accelerator: a KVM device that exists but cannot run a guest falls back to TCG, and the probe guest runs under TCG', async () => {
    const fakeDev = join(dir.path, 'kvm-present');
    await execFileP('touch', [fakeDev]);
    const state = join(dir.path, 'state-kvm');
    const choice = await chooseAccel({ mode: 'auto', stateDir: state, binary: 'qemu-system-x86_64', kvmDevice: fakeDev });
    if (existsSync('/dev/kvm') && choice.accel === 'kvm') return; // this host runs guests under KVM: nothing to fall back from
    expect(choice.accel).toBe('tcg');
    expect(choice.reason).toMatch(/kvm/i);
    expect(JSON.parse(await readFile(join(state, 'qemu-accel.json'), 'utf8'))).toMatchObject({ accel: 'tcg' });
    expect(await probeAccel('qemu-system-x86_64', 'tcg')).toEqual({ ok: true, detail: 'probe guest ran under tcg' });
  });
});

describe.skipIf(!hasQemuGa)('readiness probe by guest agent (skipped only when qemu-ga is missing: package qemu-guest-agent)', () => {
  it('answers when qemu-ga answers on qga.sock, and gives up when nothing answers', async () => {
    const work = await scratchDir('lifeboat-qga-probe-');
    const ga = spawn('qemu-ga', ['-m', 'unix-listen', '-p', join(work.path, 'qga.sock'), '-f', join(work.path, 'qga.pid'), '-t', work.path], { stdio: 'ignore' });
    try {
      const deadline = Date.now() + 5_000;
      const answered = await probeUntil(work.path, 0, { kind: 'guest-agent' }, () => Date.now() > deadline);
      expect(answered).toBe('guest agent answered guest-ping');
      ga.kill('SIGTERM');
      await once(ga, 'exit');
      const soon = Date.now() + 1_000;
      expect(await probeUntil(work.path, 0, { kind: 'guest-agent' }, () => Date.now() > soon)).toBeUndefined();
    } finally {
      if (ga.exitCode === null && ga.signalCode === null) ga.kill('SIGKILL');
      await work.remove();
    }
  });
});

describe('qemu command line', () => {
  const spec = (over: Partial<QemuSpec>): QemuSpec => ({
    failoverId: 'f', workDir: '/w', name: 'n', seeds: ['/w/seed.iso'], vmGenerationId: 'u',
    hardware: { firmware: 'bios', secureBoot: false, cpus: 0, memoryMiB: 0, guestOs: 'linux' },
    disks: [{ id: 'a', bus: 'scsi', virtualSize: 512, nbd: { host: '10.0.0.1', port: 10809, exportName: 'e,1', tlsCredsDir: '/tls' } }],
    nics: [], overlays: ['/w/disk0.qcow2'], ...over,
  });
  const ctx = { machine: 'pc', accel: 'tcg' as const, defaultMemoryMiB: 2048, defaultCpus: 2, committed: new Set<number>() };

  it('maps disks, defaults, TLS and commas as qemu wants them', () => {
    const args = qemuArgs(spec({}), '/w', ctx).join(' ');
    expect(args).toContain('-m 2048M -smp 2');
    expect(args).toContain('-accel tcg -cpu max');
    expect(args).toContain('-object tls-creds-x509,id=tls0,dir=/tls,endpoint=client');
    expect(args).toContain('export=e,,1');
    expect(args).toContain('server.type=inet,server.host=10.0.0.1,server.port=10809,tls-creds=tls0');
    expect(args).toContain('-device virtio-scsi-pci,id=scsi0');
    expect(args).toContain('scsi-hd,bus=scsi0.0,drive=ov0,id=disk0,bootindex=1');
    expect(args).toContain('-device ide-cd,drive=seed0');
    expect(args).toContain('-device vmgenid,guid=u');
    const committed = qemuArgs(spec({}), '/w', { ...ctx, committed: new Set([0]) }).join(' ');
    expect(committed).not.toContain('driver=nbd');
    expect(committed).not.toContain('backing=');
  });

  it('isolated networks are the same group for one run and another for the next; a bridge VLAN is refused', () => {
    expect(isolatedGroup('run1', 'g')).toEqual(isolatedGroup('run1', 'g'));
    expect(isolatedGroup('run1', 'g')).not.toEqual(isolatedGroup('run2', 'g'));
    expect(isolatedGroup('run1', 'g').address).toMatch(/^230\.\d+\.\d+\.\d+$/);
    const nics = [{ mac: '52:54:00:00:00:01', model: 'virtio' as const, attachment: { kind: 'bridge' as const, bridge: 'br0', vlan: 5 } }];
    expect(() => qemuArgs(spec({ nics }), '/w', ctx)).toThrow(/VLAN on bridge br0 is not supported/);
  });
});
