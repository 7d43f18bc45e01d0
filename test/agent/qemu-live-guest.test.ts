/**
 * The proof with a real guest: the Debian test guest (docs/guest.md) runs under TCG with a writer that
 * appends numbered, checksummed, fsynced records to a journal and rewrites a second file through
 * rename, for the whole test. The agent's engine replicates the running VM through the qemu source
 * (to the fake service of local-service.ts over a real file object store: its replicas are raw files)
 * and after each cycle the replica, the recovery point of that cycle, is copied and checked offline:
 * the root filesystem's journal is replayed on the copy (`e2fsck -E journal_only`, as a mount would),
 * then `e2fsck -fn` must find nothing (the filesystem is copied out of the point into a file first); every journal record up to the last present one is intact and
 * in order, and none the guest had fsynced before the point is missing; the renamed file is one whole
 * version, never a mix. Points alternate between application-consistent (guest-fsfreeze through the
 * guest agent) and crash-consistent (no guest agent), and both kinds must pass. At the end the guest is
 * shut down as a planned failover does it (QMP system_powerdown) and the final cycle is checked too.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger, type EngineContext } from '../../agent/replicate/context.js';
import { runFinalCycle } from '../../agent/commands/final-cycle.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { powerdownQemu } from '../../agent/sources/qemu-powerdown.js';
import type { VmConfig } from '../../agent/state/schema.js';
import { AgentState } from '../../agent/state/store.js';
import { generateKeyPair } from '../../shared/crypto/keys.js';
import { FileStore } from '../../shared/objectstore/file.js';
import { GuestAgentClient } from '../../shared/qmp/client.js';
import { guestSkipReason, testGuest } from '../guest/test-guest.js';
import { execFileP, scratchDir } from '../helpers.js';
import { checkPoint, LastRecordCommand, proofPoints, Writer } from './guest-writer.js';
import { LocalService } from './local-service.js';

const skip = guestSkipReason();
if (skip) console.warn(`skipping the qemu source's proof with a real guest: ${skip}`);

let dir: Awaited<ReturnType<typeof scratchDir>>;
let qemu: ChildProcess | undefined;
const figures: string[] = [];

async function guestAgent<T>(socket: string, fn: (ga: GuestAgentClient) => Promise<T>): Promise<T> {
  // One client at a time on the agent's chardev: connect for each use, so the engine's freeze gets it.
  const ga = await GuestAgentClient.connect(socket, { timeoutMs: 10_000 });
  try { return await fn(ga); } finally { ga.close(); }
}

/** The number of the last complete record the guest has written (its predecessors are fsynced). */
async function lastRecord(qga: string): Promise<number> {
  const r = await guestAgent(qga, (ga) => ga.exec('/bin/sh', ['-c', LastRecordCommand], { timeoutMs: 60_000 }));
  return Number(r.stdout.toString().trim() || 0);
}

describe.skipIf(skip !== undefined)('the qemu source with a real guest writing through replication', () => {
  beforeAll(async () => { dir = await scratchDir('lifeboat-qguest-'); });
  afterAll(async () => {
    console.log(`qemu source with a real guest:\n${figures.join('\n')}`);
    if (qemu && qemu.exitCode === null) { qemu.kill('SIGKILL'); await new Promise((r) => qemu!.once('exit', r)); }
    await dir?.remove();
  });

  it('every point taken while the writer runs is a clean filesystem with whole records and a whole renamed file, crash- and application-consistent alike', async () => {
    const t0 = Date.now();
    const guest = await testGuest({ firmware: 'bios', cloudInit: false, format: 'raw' });
    const disk = join(dir.path, 'root.qcow2');
    await execFileP('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', guest.image, disk]);
    const qmpSock = join(dir.path, 'agent.qmp');
    const qga = join(dir.path, 'qga.sock');
    qemu = spawn('qemu-system-x86_64', [
      '-accel', 'tcg', '-cpu', 'max', '-m', '512', '-smp', '1', '-no-user-config', '-nodefaults', '-display', 'none',
      '-drive', `file=${disk},format=qcow2,if=none,id=drive0,node-name=root`, '-device', 'virtio-blk-pci,drive=drive0',
      '-netdev', 'user,id=n0,restrict=on', '-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:00:0a:01',
      '-chardev', `socket,id=qga,path=${qga},server=on,wait=off`,
      '-device', 'virtio-serial', '-device', 'virtserialport,chardev=qga,name=org.qemu.guest_agent.0',
      '-serial', `file:${join(dir.path, 'serial.log')}`, '-no-shutdown', '-qmp', `unix:${qmpSock},server=on,wait=off`,
    ], { stdio: 'ignore' });
    // The guest is up when its agent answers.
    const deadline = Date.now() + 600_000;
    for (;;) {
      if (qemu.exitCode !== null) throw new Error('qemu exited');
      if (existsSync(qga) && await guestAgent(qga, (ga) => ga.ping({ timeoutMs: 5000 })).then(() => true, () => false)) break;
      if (Date.now() > deadline) throw new Error(`the guest's agent did not answer within 600 s; console:\n${(await readFile(join(dir.path, 'serial.log'), 'utf8')).slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 2000));
    }
    figures.push(`guest agent answering after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    await guestAgent(qga, (ga) => ga.execute('guest-exec', { path: '/bin/sh', arg: ['-c', Writer] }));

    const state = new AgentState(join(dir.path, 'state'));
    await state.init();
    await mkdir(join(dir.path, 'replicas'));
    const keys = await generateKeyPair();
    const service = new LocalService(new FileStore(join(dir.path, 'store')), 'acme', keys.privateKey, join(dir.path, 'replicas'));
    const config: VmConfig = {
      version: 1, name: 'web01', disks: [{ id: 'disk0', path: disk, node: 'root' }], frequencyMs: 30_000, history: 0, appConsistentEveryMs: null,
      preSnapshot: null, postSnapshot: null, compression: 'zstd', initial: { mode: 'network' }, startAt: null, bandwidthBytesPerSec: null,
      paused: false, createdAt: new Date().toISOString(), source: { kind: 'qemu', qmp: qmpSock, guestAgent: qga },
    };
    const ctx: EngineContext = { state, transport: service, tenant: 'acme', recipient: keys.publicKey, logger: silentLogger, now: () => new Date(), retry: { attempts: 1 } };
    const replicator = new Replicator(ctx);
    await proofPoints({
      cycle: () => replicator.cycle('web01'),
      consistency: async (application) => { await state.writeConfig({ ...config, source: { kind: 'qemu', qmp: qmpSock, guestAgent: application ? qga : null } }); },
      lastRecord: () => lastRecord(qga), replica: service.replicaPath('web01', 'disk0'), scratch: dir.path, figures,
    });

    // A planned failover's end: the guest shut down, then the final cycle through a view (qemu stays
    // up with -no-shutdown): a clean filesystem with every record. This guest heeds neither
    // system_powerdown nor guest-shutdown (both waited on for minutes in runs: its image has
    // systemd-logind, which acts on the power key and schedules `shutdown +0`, but no D-Bus, without
    // which logind does not run), so the test powers it off itself (systemctl poweroff through the guest
    // agent) and the agent's powerdown waits for the guest to be off.
    const written = await lastRecord(qga);
    const t = Date.now();
    await guestAgent(qga, (ga) => ga.execute('guest-exec', { path: '/bin/systemctl', arg: ['poweroff'] }));
    await powerdownQemu('web01', qmpSock, 600_000);
    figures.push(`poweroff to the guest off: ${((Date.now() - t) / 1000).toFixed(1)} s`);
    const final = await runFinalCycle(replicator, 'web01');
    const check = await checkPoint(service.replicaPath('web01', 'disk0'), join(dir.path, 'final.ext4'));
    expect(check.fsck).toMatch(/^journal clean;/); // shut down cleanly: nothing to replay
    expect(check.records).toBeGreaterThanOrEqual(written);
    expect(check.partialTail).toBe(false);
    figures.push(`final cycle ${final.cycle} (${final.consistency}) after the shutdown: ${check.records} records, state version ${check.stateVersion ?? '-'}; e2fsck: ${check.fsck}`);
    figures.push(`whole test ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }, 1_200_000);
});
