/**
 * The qemu source through the engine and the CLI against a real qemu-system-x86_64 (paused with -S:
 * no OS; the test writes through HMP `qemu-io`), replicating to the fake service of local-service.ts
 * over a real file object store: `protect --source qemu --qmp` finds the disks in the block graph,
 * cycles ship what the bitmaps say, a grown disk, an agent killed mid-cycle, a lost bitmap, a VM
 * whose QMP socket is gone. Every step ends by comparing each replica with what the test wrote.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger, type EngineContext } from '../../agent/replicate/context.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { qemuWorkDir } from '../../agent/replicate/live.js';
import { QemuSource } from '../../shared/qemu/source.js';
import type { VmConfig } from '../../agent/state/schema.js';
import { AgentState } from '../../agent/state/store.js';
import { generateKeyPair } from '../../shared/crypto/keys.js';
import { FileStore } from '../../shared/objectstore/file.js';
import { QmpClient } from '../../shared/qmp/client.js';
import { execFileP, scratchDir } from '../helpers.js';
import { LocalService } from './local-service.js';

const MiB = 1 << 20;
const KiB = 1024;
const bin = resolve(import.meta.dirname, '../../bin/lifeboat-agent.js');

let dir: Awaited<ReturnType<typeof scratchDir>>;
let qemu: ChildProcess;
let qmp: QmpClient;
let state: AgentState;
let service: LocalService;
let replicator: Replicator;
/** What each disk holds now, kept by the test from the patterns it writes (the disks start as zeros). */
const model: Record<string, Buffer> = { disk0: Buffer.alloc(16 * MiB), disk1: Buffer.alloc(8 * MiB) };
const drive: Record<string, string> = { disk0: 'drive0', disk1: 'drive1' };

async function write(disk: string, pattern: number, offset: number, length: number): Promise<void> {
  await qmp.hmp(`qemu-io ${drive[disk]} "write -P 0x${pattern.toString(16)} ${offset} ${length}"`);
  model[disk]!.fill(pattern, offset, offset + length);
}

async function expectReplicas(): Promise<void> {
  for (const disk of ['disk0', 'disk1']) {
    const replica = await readFile(service.replicaPath('web01', disk));
    expect(replica.length, `${disk} size`).toBe(model[disk]!.length);
    expect(replica.equals(model[disk]!), `${disk} equals what was written`).toBe(true);
  }
}

async function agent(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [bin, ...args], { env: { ...process.env, LIFEBOAT_AGENT_STATE: state.dir } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function viewNodes(): Promise<string[]> {
  const nodes = await qmp.execute<Array<{ 'node-name': string }>>('query-named-block-nodes', { flat: true });
  return nodes.map((n) => n['node-name']).filter((n) => n.startsWith('lifeboat-'));
}

beforeAll(async () => {
  dir = await scratchDir('lifeboat-qlive-');
  await execFileP('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir.path, 'd0.qcow2'), String(16 * MiB)]);
  await execFileP('qemu-img', ['create', '-q', '-f', 'raw', join(dir.path, 'd1.raw'), String(8 * MiB)]);
  const agentSock = join(dir.path, 'agent.qmp');
  const testSock = join(dir.path, 'test.qmp');
  qemu = spawn('qemu-system-x86_64', ['-S', '-nodefaults', '-display', 'none', '-accel', 'tcg', '-m', '128', '-smp', '2',
    '-drive', `file=${join(dir.path, 'd0.qcow2')},format=qcow2,if=none,id=drive0,node-name=n0`, '-device', 'virtio-blk-pci,drive=drive0',
    '-drive', `file=${join(dir.path, 'd1.raw')},format=raw,if=none,id=drive1,node-name=n1`, '-device', 'virtio-blk-pci,drive=drive1',
    '-netdev', 'user,id=net0', '-device', 'virtio-net-pci,netdev=net0,mac=52:54:00:aa:bb:01',
    '-qmp', `unix:${agentSock},server=on,wait=off`, '-qmp', `unix:${testSock},server=on,wait=off`], { stdio: 'ignore' });
  const deadline = Date.now() + 15_000;
  while (!existsSync(agentSock) || !existsSync(testSock)) {
    if (qemu.exitCode !== null || Date.now() > deadline) throw new Error('qemu did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  qmp = await QmpClient.connect(testSock);
  state = new AgentState(join(dir.path, 'state'));
  await state.init();
  await mkdir(join(dir.path, 'replicas'));
  const keys = await generateKeyPair();
  service = new LocalService(new FileStore(join(dir.path, 'store')), 'acme', keys.privateKey, join(dir.path, 'replicas'));
  const ctx: EngineContext = { state, transport: service, tenant: 'acme', recipient: keys.publicKey, logger: silentLogger, now: () => new Date(), retry: { attempts: 1 }, sealThreads: 1 };
  replicator = new Replicator(ctx);
}, 30_000);

afterAll(async () => {
  await qmp?.close();
  if (qemu && qemu.exitCode === null) { qemu.kill('SIGKILL'); await new Promise((r) => qemu.once('exit', r)); }
  await dir?.remove();
});

describe('the qemu source through protect and the engine', () => {
  it('protect --source qemu finds the disks and the machine in the running VM; status shows the source', async () => {
    await write('disk0', 0x11, 0, 3 * MiB);
    await write('disk1', 0x22, MiB, 2 * MiB);
    const r = await agent('protect', 'web01', '--source', 'qemu', '--qmp', join(dir.path, 'agent.qmp'), '--frequency', '30s', '--json');
    expect(r.stderr).toBe('');
    const config = JSON.parse(r.stdout) as VmConfig & { machine: { hardware: unknown; nics: unknown } };
    expect(config.source).toEqual({ kind: 'qemu', qmp: join(dir.path, 'agent.qmp'), guestAgent: null });
    expect(config.disks).toEqual([{ id: 'disk0', path: join(dir.path, 'd0.qcow2'), node: 'n0' }, { id: 'disk1', path: join(dir.path, 'd1.raw'), node: 'n1' }]);
    expect(config.hardware).toBeUndefined(); // nothing given: what qemu says is read again every cycle
    expect(config.machine.hardware).toEqual({ cpus: 2, memoryMiB: 128, firmware: 'bios' });
    expect(config.machine.nics).toEqual([{ mac: '52:54:00:aa:bb:01', model: 'virtio', addresses: [] }]);
    // A bitmap per disk from protect on: persistent on the qcow2, not on the raw (which cannot store one).
    const bitmaps = await Promise.all(['n0', 'n1'].map((node) => new QemuSource({ qmp, node, workDir: dir.path }).bitmaps()));
    expect(bitmaps.map((b) => b.map((x) => [x.name, x.persistent]))).toEqual([[['lifeboat-0', true]], [['lifeboat-0', false]]]);

    const bad = await agent('protect', 'web02', '--source', 'qemu', '--qmp', join(dir.path, 'nothing.qmp'));
    expect(bad.code).not.toBe(0);
    expect(bad.stderr.trim().split('\n')).toEqual([`lifeboat-agent: VM web02: QMP socket ${join(dir.path, 'nothing.qmp')}: no such socket`]);
    const unknown = await agent('protect', 'web03', '--source', 'qemu', '--qmp', join(dir.path, 'agent.qmp'), '--disk', 'drive9');
    expect(unknown.stderr).toMatch(/^lifeboat-agent: --disk drive9: not a writable disk of this VM \(its disks: drive0 node n0, drive1 node n1\)\n$/);
  }, 60_000);

  it('the first cycle copies each disk from its view; later cycles ship the dirty granules only', async () => {
    const first = await replicator.cycle('web01');
    expect(first.outcome).toBe('ok');
    await expectReplicas();
    await write('disk0', 0x33, 5 * MiB + 4 * KiB, 8 * KiB);
    await write('disk1', 0x44, 7 * MiB, 64 * KiB);
    const next = await replicator.cycle('web01');
    expect(next.stats?.logs).toBe(2);
    expect(next.stats?.changedBytes).toBe(2 * 64 * KiB); // one 64 KiB granule on each disk
    await expectReplicas();
    const status = JSON.parse((await agent('status', '--json')).stdout) as { vms: Array<{ lastConsistency: string; disks: Array<{ source: string; tracking: { node: string; bitmap: string; granularity: number } }> }> };
    expect(status.vms[0]!.lastConsistency).toBe('crash');
    expect(status.vms[0]!.disks.map((d) => [d.source, d.tracking.node, d.tracking.bitmap.startsWith('lifeboat-'), d.tracking.granularity])).toEqual([['qemu', 'n0', true, 64 * KiB], ['qemu', 'n1', true, 64 * KiB]]);
    expect((await agent('status')).stdout).toMatch(/disk0: .* \(qemu node n0, bitmap lifeboat-\d+ of 64\.0 KiB granules\)/);
    expect(await viewNodes()).toEqual([]);
    expect((await state.readProgress('web01')).machine).toMatchObject({ hardware: { cpus: 2, memoryMiB: 128, firmware: 'bios' }, nics: [{ mac: '52:54:00:aa:bb:01' }] });
  }, 60_000);

  it('a NIC added to the running VM is read at the next cycle and the VM registered again with it', async () => {
    await qmp.execute('netdev_add', { type: 'user', id: 'net1' });
    await qmp.execute('device_add', { driver: 'e1000', netdev: 'net1', mac: '52:54:00:aa:bb:02', id: 'nic1' });
    service.calls.length = 0;
    await replicator.cycle('web01');
    expect(service.calls).toContain('register');
    expect((await state.readProgress('web01')).machine?.nics).toEqual([
      { mac: '52:54:00:aa:bb:01', model: 'virtio', addresses: [] }, { mac: '52:54:00:aa:bb:02', model: 'e1000', addresses: [] },
    ]);
    service.calls.length = 0;
    await replicator.cycle('web01');
    expect(service.calls).not.toContain('register'); // unchanged: not registered again
    await expectReplicas();
  }, 60_000);

  it('a disk grown in the running VM (block_resize) is registered at its new size and replicated without protecting again', async () => {
    await qmp.execute('block_resize', { device: 'drive0', size: 24 * MiB });
    model.disk0 = Buffer.concat([model.disk0!, Buffer.alloc(8 * MiB)]);
    await write('disk0', 0x55, 20 * MiB, 128 * KiB);
    const r = await replicator.cycle('web01');
    expect(r.outcome).toBe('ok');
    expect(service.vms.get('web01')!.get('disk0')!.virtualSize).toBe(24 * MiB);
    await expectReplicas();
  }, 60_000);

  it('an agent killed mid-cycle leaves a view and a frozen bitmap: the next cycle removes them and loses nothing', async () => {
    // What a killed agent leaves: the view, its export and job, bitmap n disabled (its changes not shipped).
    const dead = await QmpClient.connect(join(dir.path, 'agent.qmp'));
    await write('disk0', 0x66, 9 * MiB, 64 * KiB);
    await new QemuSource({ qmp: dead, node: 'n0', workDir: qemuWorkDir(state, 'web01') }).begin();
    await dead.close();
    expect(await viewNodes()).toEqual(['lifeboat-view-n0']);
    await write('disk0', 0x77, 11 * MiB, 64 * KiB);
    const r = await replicator.cycle('web01');
    expect(r.outcome).toBe('ok');
    await expectReplicas();
    expect(await viewNodes()).toEqual([]);
    expect((await qmp.execute<Array<{ id: string }>>('query-block-exports'))).toEqual([]);
  }, 60_000);

  it('a lost bitmap is detected and the disk is compared with its replica (a delta base), then tracked again', async () => {
    for (const b of await new QemuSource({ qmp, node: 'n1', workDir: dir.path }).bitmaps()) await qmp.execute('block-dirty-bitmap-remove', { node: 'n1', name: b.name });
    await write('disk1', 0x88, 3 * MiB, 4 * KiB);
    const r = await replicator.cycle('web01');
    expect(r.outcome).toBe('ok');
    expect(r.baseBytes).toBe(8 * MiB);
    await expectReplicas();
    const p = await state.readProgress('web01');
    expect(p.disks.disk1!.tracking?.lostAt).not.toBeNull();
    expect(p.disks.disk1!.initial).toMatchObject({ state: 'done', mode: 'delta' });
    await write('disk1', 0x99, 6 * MiB, 4 * KiB);
    const after = await replicator.cycle('web01');
    expect(after.baseBytes).toBe(0);
    expect(after.stats?.changedBytes).toBe(64 * KiB);
    await expectReplicas();
  }, 60_000);

  it('a VM whose QMP socket is gone fails with one line naming it and the socket; the other VMs go on', async () => {
    const web01 = await state.readConfig('web01');
    const gone = join(dir.path, 'gone.qmp');
    await state.writeConfig({ ...web01, name: 'gone', disks: [{ id: 'disk0', path: 'x', node: 'n9' }], source: { kind: 'qemu', qmp: gone, guestAgent: null } });
    await write('disk0', 0xaa, 13 * MiB, 4 * KiB);
    const results = await replicator.runOnce();
    expect(results.find((x) => x.vm === 'gone')).toMatchObject({ outcome: 'failed', error: `VM gone: QMP socket ${gone}: no such socket` });
    expect(results.find((x) => x.vm === 'web01')?.outcome).toBe('ok');
    await expectReplicas();
    // A socket with nothing listening: refused, the same one line.
    await writeFile(gone, '');
    const again = await replicator.runOnce();
    expect(again.find((x) => x.vm === 'gone')?.error).toMatch(/^VM gone: QMP socket .*gone\.qmp: /);
    await state.removeVm('gone');
  }, 60_000);

  it('a guest agent that does not answer makes the point crash-consistent, with a warning', async () => {
    const web01 = await state.readConfig('web01');
    await state.writeConfig({ ...web01, source: { kind: 'qemu', qmp: join(dir.path, 'agent.qmp'), guestAgent: join(dir.path, 'qga.sock') } });
    const r = await replicator.cycle('web01');
    expect(r.stats?.consistency).toBe('crash');
    expect(r.stats?.warnings.join('\n')).toMatch(/guest agent .*qga\.sock did not answer .*crash-consistent/);
    await expectReplicas();
  }, 60_000);
});
