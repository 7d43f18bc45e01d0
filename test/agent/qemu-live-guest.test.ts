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
import { createHash } from 'node:crypto';
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
import { rootPartitionOffset } from '../guest/guest-files.js';
import { guestSkipReason, testGuest } from '../guest/test-guest.js';
import { execFileP, scratchDir } from '../helpers.js';
import { LocalService } from './local-service.js';

const skip = guestSkipReason();
if (skip) console.warn(`skipping the qemu source's proof with a real guest: ${skip}`);

const WriterDir = '/var/lib/lifeboat-writer';
/** The writer: record i is `record i <pad> <sha256 of "record i <pad>">`, fsynced; every 5th record the state file is rewritten whole (64 lines of one version) and renamed over the old. */
const Writer = `
d=${WriterDir}; mkdir -p $d; cd $d || exit 1
pad=$(printf '%0150d' 0)
i=0
while :; do
  i=$((i+1))
  body="record $i $pad"
  sum=$(printf '%s' "$body" | sha256sum); sum=\${sum%% *}
  printf '%s %s\\n' "$body" "$sum" >> journal
  sync journal
  if [ $((i % 5)) -eq 0 ]; then
    k=0; : > state.tmp
    while [ $k -lt 64 ]; do k=$((k+1)); printf 'version %s line %s %s\\n' $i $k $pad >> state.tmp; done
    sync state.tmp; mv state.tmp state
  fi
done
`;

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
  const r = await guestAgent(qga, (ga) => ga.exec('/bin/sh', ['-c', `tail -n 1 ${WriterDir}/journal | cut -d' ' -f2`], { timeoutMs: 60_000 }));
  return Number(r.stdout.toString().trim() || 0);
}

interface PointCheck { records: number; partialTail: boolean; stateVersion: number | undefined; fsck: string }

/** A file of the guest's root filesystem (debugfs dump), or undefined when it has none. */
async function dumpFile(fs: string, path: string): Promise<Buffer | undefined> {
  const out = `${fs}.dump`;
  await execFileP('rm', ['-f', out]);
  await execFileP('debugfs', ['-R', `dump ${path} ${out}`, fs]);
  return readFile(out).catch(() => undefined);
}

/**
 * Copies the root filesystem of the replica as it is now (the cycle's recovery point) into a file of
 * its own (e2fsck re-opens a filesystem after replaying its journal and loses a `?offset=`), then
 * checks it offline; throws with what was wrong.
 */
async function checkPoint(replica: string, fs: string): Promise<PointCheck> {
  const offset = await rootPartitionOffset(replica);
  await execFileP('dd', [`if=${replica}`, `of=${fs}`, `skip=${offset}`, 'bs=4M', 'iflag=skip_bytes', 'conv=sparse', 'status=none']);
  // Replay the journal as a mount would (exit 0: nothing to do, 1: replayed/fixed what recovery fixes).
  const replayed = (out: string) => (/recovering journal/.test(out) ? 'replayed' : 'clean');
  const replay = await execFileP('e2fsck', ['-E', 'journal_only', '-y', fs]).then((r) => replayed(r.stdout + r.stderr), async (err: { code?: number; stdout?: string; stderr?: string }) => {
    if (err.code === 1) return replayed(`${err.stdout}${err.stderr}`);
    const full = await execFileP('e2fsck', ['-fn', fs]).then((r) => r.stdout, (e: { stdout?: string }) => e.stdout ?? '');
    throw new Error(`e2fsck -E journal_only exited ${err.code}: ${err.stdout}${err.stderr}\ne2fsck -fn then says:\n${full.slice(0, 3000)}`);
  });
  const fsck = await execFileP('e2fsck', ['-fn', fs]).then((r) => r.stdout, (err: { code?: number; stdout?: string }) => {
    throw new Error(`e2fsck -fn exited ${err.code} after the journal (${replay}):\n${(err.stdout ?? '').slice(0, 3000)}`);
  });
  const journal = (await dumpFile(fs, `${WriterDir}/journal`)) ?? Buffer.alloc(0);
  const lines = journal.toString('latin1').split('\n');
  const tail = lines.pop()!; // after the last newline: empty, or a record not wholly written at the instant
  lines.forEach((line, i) => {
    const m = /^(record (\d+) 0{150}) ([0-9a-f]{64})$/.exec(line);
    if (!m) throw new Error(`journal line ${i + 1} is not a whole record: ${JSON.stringify(line.slice(0, 80))}`);
    if (Number(m[2]) !== i + 1) throw new Error(`journal line ${i + 1} holds record ${m[2]}`);
    if (createHash('sha256').update(m[1]!).digest('hex') !== m[3]) throw new Error(`record ${i + 1}: checksum differs`);
  });
  const state = await dumpFile(fs, `${WriterDir}/state`);
  let stateVersion: number | undefined;
  if (state !== undefined) {
    const versions = new Set(state.toString('latin1').split('\n').filter(Boolean).map((l) => /^version (\d+) line \d+ 0{150}$/.exec(l)?.[1] ?? 'torn'));
    const count = state.toString('latin1').split('\n').filter(Boolean).length;
    if (versions.size !== 1 || versions.has('torn') || count !== 64) throw new Error(`the renamed file is a mix: versions ${[...versions].join(',')}, ${count} lines`);
    stateVersion = Number([...versions][0]);
  }
  return { records: lines.length, partialTail: tail.length > 0, stateVersion, fsck: `journal ${replay}; ${fsck.trim().split('\n').at(-1) ?? ''}` };
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
    const seen: Record<string, number> = { application: 0, crash: 0 };
    let lastRecords = 0;
    // Point 0 is the base; then logs, alternating application- and crash-consistent.
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 5000)); // the writer goes on between points
      const application = i % 2 === 0;
      await state.writeConfig({ ...config, source: { kind: 'qemu', qmp: qmpSock, guestAgent: application ? qga : null } });
      const fsynced = (await lastRecord(qga)) - 1; // the record before the last one seen was fsynced before the point
      const t = Date.now();
      const r = await replicator.cycle('web01');
      const cycleSeconds = (Date.now() - t) / 1000;
      expect(r.outcome, r.error).not.toBe('failed');
      expect(r.stats!.consistency).toBe(application ? 'application' : 'crash');
      const copy = join(dir.path, `point-${i}.ext4`);
      const check = await checkPoint(service.replicaPath('web01', 'disk0'), copy).catch((err: Error) => { throw new Error(`point ${i} (${r.stats!.consistency}): ${err.message}`); });
      expect(check.records, `point ${i}: records the guest had fsynced before it`).toBeGreaterThanOrEqual(fsynced);
      expect(check.records).toBeGreaterThanOrEqual(lastRecords);
      lastRecords = check.records;
      seen[r.stats!.consistency]!++;
      figures.push(`point ${i} ${r.stats!.consistency}: cycle ${cycleSeconds.toFixed(1)} s, changed ${(r.stats!.changedBytes / 1024).toFixed(0)} KiB, sent ${(r.stats!.sentBytes / 1024).toFixed(0)} KiB${r.baseBytes ? `, base of ${Math.round(r.baseBytes / (1 << 20))} MiB` : ''}; ${check.records} records (${fsynced} fsynced before)${check.partialTail ? ' and a partial one' : ''}, state version ${check.stateVersion ?? '-'}; e2fsck: ${check.fsck}${r.stats!.warnings.length ? `; warnings: ${r.stats!.warnings.join(' | ')}` : ''}`);
      await execFileP('rm', ['-f', copy, `${copy}.dump`]);
    }
    expect(seen.application).toBeGreaterThanOrEqual(2);
    expect(seen.crash).toBeGreaterThanOrEqual(2);
    expect(lastRecords).toBeGreaterThan(0);

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
