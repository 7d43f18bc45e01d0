/**
 * The qemu source across a qemu restart: a qcow2 keeps our persistent bitmap (the writes before the
 * restart still ship after it; qemu-img info lists the bitmap while qemu is down); a raw disk's
 * bitmap cannot be persistent, so after the restart it is lost and the source reports it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuSource } from '../../shared/qemu/source.js';
import type { Extent } from '../../shared/disk/index.js';
import { QmpClient } from '../../shared/qmp/client.js';
import { execFileP, scratchDir } from '../helpers.js';

const MiB = 1 << 20;
let dir: Awaited<ReturnType<typeof scratchDir>>;
beforeAll(async () => { dir = await scratchDir('lifeboat-qemurst-'); });
afterAll(async () => { await dir.remove(); });

interface Vm { qemu: ChildProcess; qmp: QmpClient }
async function startVm(disk: string, format: 'qcow2' | 'raw'): Promise<Vm> {
  const sock = join(dir.path, `${format}.qmp`);
  await rm(sock, { force: true }); // the last qemu's socket file stays behind; wait for the new one
  const qemu = spawn('qemu-system-x86_64', ['-S', '-nodefaults', '-display', 'none', '-accel', 'tcg', '-m', '32',
    '-drive', `file=${disk},format=${format},if=none,id=drive0,node-name=disk0`, '-device', 'virtio-blk-pci,drive=drive0',
    '-qmp', `unix:${sock},server=on,wait=off`], { stdio: 'ignore' });
  const deadline = Date.now() + 15_000;
  while (!existsSync(sock)) {
    if (qemu.exitCode !== null || Date.now() > deadline) throw new Error('qemu did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  return { qemu, qmp: await QmpClient.connect(sock) };
}
/** A clean quit: qemu writes persistent bitmaps into the qcow2. */
async function quit(vm: Vm): Promise<void> {
  const exited = new Promise((r) => vm.qemu.once('exit', r));
  await vm.qmp.execute('quit').catch(() => undefined);
  await exited;
  await vm.qmp.close();
}
async function extentsOf(source: QemuSource): Promise<{ lost: boolean; extents: Array<[number, number]> }> {
  const cycle = await source.begin();
  try {
    const out: Extent[] = [];
    for await (const e of cycle.extents()) out.push(e);
    await cycle.commit();
    return { lost: cycle.bitmapLost, extents: out.filter((e) => e.kind === 'data').map((e) => [e.offset, e.length]) };
  } finally { await cycle.end(); }
}

describe('qemu source across a qemu restart', () => {
  it('qcow2: the persistent bitmap survives; writes before the restart ship after it', async () => {
    const disk = join(dir.path, 'd.qcow2');
    await execFileP('qemu-img', ['create', '-q', '-f', 'qcow2', disk, String(8 * MiB)]);
    let vm = await startVm(disk, 'qcow2');
    await new QemuSource({ qmp: vm.qmp, node: 'disk0', workDir: dir.path }).protect();
    await vm.qmp.hmp('qemu-io drive0 "write -P 0x21 3M 4k"');
    await quit(vm);
    expect((await execFileP('qemu-img', ['info', disk])).stdout).toMatch(/name: lifeboat-0/);

    vm = await startVm(disk, 'qcow2');
    try {
      const source = new QemuSource({ qmp: vm.qmp, node: 'disk0', workDir: dir.path });
      expect(await extentsOf(source)).toEqual({ lost: false, extents: [[3 * MiB, 64 * 1024]] });
    } finally { await quit(vm); }
  });

  it('raw: the bitmap is not persistent, so after a restart it is reported lost and a resync follows', async () => {
    const disk = join(dir.path, 'd.raw');
    await execFileP('truncate', ['-s', String(8 * MiB), disk]);
    let vm = await startVm(disk, 'raw');
    try {
      const persistent = await new QemuSource({ qmp: vm.qmp, node: 'disk0', workDir: dir.path, persistent: true }).protect().then(() => true, (e: Error) => e.message);
      expect(persistent).toMatch(/persist/i); // qemu refuses a persistent bitmap on raw
      await new QemuSource({ qmp: vm.qmp, node: 'disk0', workDir: dir.path }).protect(); // the default there: not persistent
      expect((await new QemuSource({ qmp: vm.qmp, node: 'disk0', workDir: dir.path }).bitmaps()).map((b) => b.persistent)).toEqual([false]);
      await vm.qmp.hmp('qemu-io drive0 "write -P 0x22 5M 4k"');
    } finally { await quit(vm); }

    vm = await startVm(disk, 'raw');
    try {
      const source = new QemuSource({ qmp: vm.qmp, node: 'disk0', workDir: dir.path, persistent: false });
      const first = await extentsOf(source);
      expect(first.lost).toBe(true);
      expect(first.extents.some(([o, l]) => o <= 5 * MiB && o + l >= 5 * MiB + 4096)).toBe(true);
      await vm.qmp.hmp('qemu-io drive0 "write -P 0x23 1M 4k"');
      expect(await extentsOf(source)).toEqual({ lost: false, extents: [[MiB, 64 * 1024]] });
    } finally { await quit(vm); }
  });
});
