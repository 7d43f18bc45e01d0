/**
 * The libvirt source with a real booted guest: the Debian test guest (docs/guest.md) runs as a domain
 * of a private session libvirtd (libvirt-daemon.ts, TCG) with a qemu-guest-agent channel, and runs the
 * qemu source's proof writer (guest-writer.ts) while the agent's engine replicates the domain through
 * the libvirt source (to the fake service of local-service.ts over a real file object store: its
 * replicas are raw files). After each cycle the replica, the point of that cycle, is checked offline
 * as the qemu proof checks it (journal replayed on a copy, `e2fsck -fn` clean, every record up to the
 * last present one intact and in order, none the guest had fsynced before the point missing, the
 * renamed file one whole version). Points alternate between application-consistent (domfsfreeze
 * through the guest agent) and crash-consistent. The guest's addresses are read with
 * `virsh domifaddr --source agent` and reported per NIC. Then the planned failover's shutdown through
 * `virsh shutdown`, which the guest obeys, and the final cycle, checked too.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { protectLibvirt } from '../../agent/cli/protect-libvirt.js';
import { runFinalCycle } from '../../agent/commands/final-cycle.js';
import { silentLogger, type EngineContext } from '../../agent/replicate/context.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { shutdownLibvirt } from '../../agent/sources/libvirt-shutdown.js';
import type { SourceConfig, VmConfig } from '../../agent/state/schema.js';
import { AgentState } from '../../agent/state/store.js';
import { generateKeyPair } from '../../shared/crypto/keys.js';
import { FileStore } from '../../shared/objectstore/file.js';
import { guestSkipReason, testGuest } from '../guest/test-guest.js';
import { execFileP, scratchDir } from '../helpers.js';
import { checkPoint, LastRecordCommand, proofPoints, Writer } from './guest-writer.js';
import { libvirtMissing, LibvirtSession } from './libvirt-daemon.js';
import { LocalService } from './local-service.js';

const skip = libvirtMissing() ?? guestSkipReason();
if (skip) console.warn(`skipping the libvirt source's proof with a real guest: ${skip}`);

const Mac = '52:54:00:00:0a:02';
let lv: LibvirtSession | undefined;
let dir: Awaited<ReturnType<typeof scratchDir>> | undefined;
const figures: string[] = [];

/** A guest agent command through libvirt (libvirt holds the agent's channel); its return value. */
async function agentCommand<T>(execute: string, args?: Record<string, unknown>, timeoutS = 60): Promise<T> {
  const out = await lv!.virsh('qemu-agent-command', 'web01', '--timeout', String(timeoutS), JSON.stringify({ execute, ...(args ? { arguments: args } : {}) }));
  return (JSON.parse(out) as { return: T }).return;
}

/** Runs a shell command in the guest and waits for it; its stdout. */
async function guestShell(command: string): Promise<string> {
  const { pid } = await agentCommand<{ pid: number }>('guest-exec', { path: '/bin/sh', arg: ['-c', command], 'capture-output': true });
  for (let i = 0; i < 120; i++) {
    const s = await agentCommand<{ exited: boolean; exitcode?: number; 'out-data'?: string; 'err-data'?: string }>('guest-exec-status', { pid });
    if (s.exited) {
      const out = Buffer.from(s['out-data'] ?? '', 'base64').toString();
      if (s.exitcode !== 0) throw new Error(`guest: ${command}: exit ${s.exitcode}: ${Buffer.from(s['err-data'] ?? '', 'base64').toString()}`);
      return out;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`guest: ${command}: still running after 60 s`);
}

async function lastRecord(): Promise<number> {
  return Number((await guestShell(LastRecordCommand)).trim() || 0);
}

describe.skipIf(skip !== undefined)('the libvirt source with a real guest writing through replication', () => {
  beforeAll(async () => { lv = await LibvirtSession.start(); dir = await scratchDir('lifeboat-lvguest-'); }, 120_000);
  afterAll(async () => {
    console.log(`libvirt source with a real guest:\n${figures.join('\n')}`);
    await lv?.stop();
    await dir?.remove();
  }, 120_000);

  it('points taken while the writer runs are clean, application- and crash-consistent alike; the guest\'s addresses are reported; virsh shutdown and the final cycle', async () => {
    const t0 = Date.now();
    const guest = await testGuest({ firmware: 'bios', cloudInit: false, format: 'raw' });
    const vmDir = join(lv!.dir, 'vm');
    const disk = join(vmDir, 'root.qcow2');
    await execFileP('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', guest.image, disk]);
    await lv!.own(disk);
    const serial = join(vmDir, 'serial.log');
    await writeFile(join(lv!.dir, 'web01.xml'), [
      "<domain type='qemu'><name>web01</name><memory unit='MiB'>512</memory><vcpu>1</vcpu>",
      "<os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/></features><on_poweroff>destroy</on_poweroff><devices>",
      `<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${disk}'/><target dev='vda' bus='virtio'/></disk>`,
      `<interface type='user'><mac address='${Mac}'/><model type='virtio'/></interface>`,
      "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>",
      `<serial type='file'><source path='${serial}'/><target port='0'/></serial>`,
      '</devices></domain>',
    ].join(''));
    await lv!.virsh('define', join(lv!.dir, 'web01.xml'));
    await lv!.virsh('start', 'web01');
    // The guest is up when its agent answers (guests boot slowly under TCG on a loaded machine).
    const deadline = Date.now() + 900_000;
    while (!(await agentCommand('guest-ping', undefined, 5).then(() => true, () => false))) {
      if ((await lv!.virsh('domstate', 'web01')).trim() !== 'running') throw new Error('the domain stopped while booting');
      if (Date.now() > deadline) throw new Error(`the guest's agent did not answer within 900 s; console:\n${existsSync(serial) ? (await readFile(serial, 'utf8')).slice(-2000) : '(none)'}`);
      await new Promise((r) => setTimeout(r, 3000));
    }
    figures.push(`guest agent answering after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    // The test guest has no DHCP client configured (no cloud-init): the NIC gets the address slirp expects.
    await guestShell(`for i in /sys/class/net/*; do if [ "$(cat $i/address)" = ${Mac} ]; then ip link set \${i##*/} up && ip addr add 10.0.2.15/24 dev \${i##*/}; fi; done`);
    await agentCommand('guest-exec', { path: '/bin/sh', arg: ['-c', Writer] });

    const state = new AgentState(join(dir!.path, 'state'));
    await state.init();
    const keys = await generateKeyPair();
    const replicas = join(dir!.path, 'replicas');
    await mkdir(replicas);
    const service = new LocalService(new FileStore(join(dir!.path, 'store')), 'acme', keys.privateKey, replicas);
    const workDir = join(lv!.dir, 'work'); // the daemon's user writes its scratch files and socket there
    const prot = await protectLibvirt('web01', { domain: 'web01', connect: lv!.uri, workDir, disk: ['vda'] }, undefined, workDir);
    expect(prot.source.guestAgent).toBe(true);
    const config: VmConfig = {
      version: 1, name: 'web01', disks: prot.disks, frequencyMs: 30_000, history: 0, appConsistentEveryMs: null,
      preSnapshot: null, postSnapshot: null, compression: 'zstd', initial: { mode: 'network' }, startAt: null, bandwidthBytesPerSec: null,
      paused: false, createdAt: new Date().toISOString(), source: prot.source,
    };
    const source = (guestAgent: boolean): SourceConfig => ({ ...prot.source, guestAgent });
    const ctx: EngineContext = { state, transport: service, tenant: 'acme', recipient: keys.publicKey, logger: silentLogger, now: () => new Date(), retry: { attempts: 1 } };
    const replicator = new Replicator(ctx);
    await proofPoints({
      cycle: () => replicator.cycle('web01'),
      consistency: async (application) => { await state.writeConfig({ ...config, source: source(application) }); },
      lastRecord: () => lastRecord(), replica: service.replicaPath('web01', 'disk0'), scratch: dir!.path, figures,
    });

    // The guest's addresses as the engine registered them (domifaddr --source agent; link-local left out).
    const machine = (await state.readProgress('web01')).machine!;
    expect(machine.nics).toHaveLength(1);
    expect(machine.nics[0]).toMatchObject({ mac: Mac, model: 'virtio' });
    expect(machine.nics[0]!.addresses).toContain('10.0.2.15/24');
    expect(machine.nics[0]!.addresses.filter((a) => /^fe80:|^127\./i.test(a))).toEqual([]);
    figures.push(`addresses reported: ${machine.nics[0]!.addresses.join(', ')}`);

    // A planned failover's shutdown: virsh shutdown, through the guest agent (guest-shutdown runs
    // /sbin/shutdown). The test guest has no D-Bus, so its /sbin/shutdown (systemctl, which schedules
    // the shutdown through logind) does nothing there; it is replaced in the guest by `systemctl
    // poweroff` (systemd's own socket), as a guest with D-Bus would behave.
    await guestShell('rm -f /sbin/shutdown && printf \'#!/bin/sh\\nexec /bin/systemctl poweroff\\n\' > /sbin/shutdown && chmod 755 /sbin/shutdown');
    const written = await lastRecord();
    const t = Date.now();
    expect(await shutdownLibvirt('web01', prot.source, 900_000)).toBe('libvirt');
    figures.push(`virsh shutdown to the domain shut off: ${((Date.now() - t) / 1000).toFixed(1)} s`);
    const final = await runFinalCycle(replicator, 'web01');
    expect((await lv!.virsh('domstate', 'web01')).trim()).toBe('shut off');
    const check = await checkPoint(service.replicaPath('web01', 'disk0'), join(dir!.path, 'final.ext4'));
    expect(check.fsck).toMatch(/^journal clean;/); // shut down cleanly: nothing to replay
    expect(check.records).toBeGreaterThanOrEqual(written);
    expect(check.partialTail).toBe(false);
    figures.push(`final cycle ${final.cycle} (${final.consistency}) after the shutdown: ${check.records} records, state version ${check.stateVersion ?? '-'}; e2fsck: ${check.fsck}`);
    figures.push(`whole test ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }, 2_400_000);
});
