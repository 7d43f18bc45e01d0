/**
 * The libvirt source against a real libvirtd (a private session daemon, libvirt-daemon.ts) running a
 * paused domain under TCG (no OS: the test writes through HMP qemu-io on the disks' devices), replicated
 * to the real service (PostgreSQL catalog, VHDX replicas, merges by Merger on Redis). `protect --source
 * libvirt` reads the domain's disks and machine from dumpxml and starts a checkpoint; each cycle's
 * backup job exports the disks with `qemu:dirty-bitmap:backup-<disk>`, and nbdinfo --map over that export
 * is the referee for what the cycle reads; every point is compared with the domain's disks by
 * qemu-img compare. Then: a cycle that fails keeps the old checkpoint, a backup job left by a killed
 * agent, a lost checkpoint (a delta resync), a missing or refusing libvirt socket (one line naming
 * the VM; the other VMs go on), and the final cycle of a planned failover on a domain shut off.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFinalCycle } from '../../agent/commands/final-cycle.js';
import { enroll } from '../../agent/enroll/enroll.js';
import { silentLogger } from '../../agent/replicate/context.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { engineContext } from '../../agent/replicate/from-state.js';
import { LibvirtVmView } from '../../agent/sources/libvirt-view.js';
import type { VmConfig } from '../../agent/state/schema.js';
import { AgentState } from '../../agent/state/store.js';
import { cutPoint } from '../../service/workers/cut-point.js';
import { execFileP, referee, until } from '../helpers.js';
import type { MergeHarness } from '../service/helpers.js';
import { mergeHarness, operator } from '../service/helpers.js';
import { hmpWrite, libvirtMissing, LibvirtSession } from './libvirt-daemon.js';

const MiB = 1 << 20;
const KiB = 1024;
const agentBin = resolve(import.meta.dirname, '../../bin/lifeboat-agent.js');
const skip = libvirtMissing();
if (skip) console.warn(`skipping the libvirt source tests: ${skip}`);

let lv: LibvirtSession;
let h: MergeHarness;
let state: AgentState;
let replicator: Replicator;
let exports = 0;
const disk = (name: string) => join(lv.dir, 'vm', name);
const work = () => join(lv.dir, 'work');
/** The domain's disks: vda and vdb are tracked; vdc is raw (no checkpoint can cover it). */
const tracked = [{ target: 'vda', alias: 'virtio-disk0', file: 'd0.qcow2' }, { target: 'vdb', alias: 'virtio-disk1', file: 'd1.qcow2' }];

async function agent(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [agentBin, ...args, '--state-dir', state.dir]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function checkpoints(): Promise<string[]> {
  return (await lv.virsh('checkpoint-list', 'web01', '--name')).split('\n').map((l) => l.trim()).filter(Boolean);
}

/** One cycle of web01 through the engine, then every merge it made due; the result. */
async function cycle(vm = 'web01') {
  const r = await replicator.cycle(vm);
  while ((await h.merger.merge()) > 0) { /* until nothing is pending */ }
  return r;
}

/** The latest point of web01 equals the domain's disks as they are now (the domain is paused: they hold still). */
async function expectPointEqualsDisks(): Promise<void> {
  const point = await cutPoint(h.svc.ctx, h.redis, { tenant: 'acme', vm: 'web01', timeoutMs: 120_000, lockPrefix: h.lockPrefix });
  for (const [i, d] of tracked.entries()) {
    // qemu keeps qcow2 metadata in its cache: flushed, so qemu-img reading the file beside it sees every write.
    await lv.virsh('qemu-monitor-command', 'web01', '--hmp', `qemu-io -d /machine/peripheral/${d.alias}/virtio-backend flush`);
    const out = join(h.env.dir, `export-${exports++}.raw`);
    const r = await operator(h.svc, 'POST', '/v1/tenants/acme/vms/web01/exports', { disk: `disk${i}`, point: String(point.id), format: 'raw', path: out });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    // -U: the disk is open in the domain's qemu (paused, so it holds still).
    await referee('qemu-img', ['compare', '-q', '-U', '-f', 'qcow2', '-F', 'raw', disk(d.file), out]);
  }
}

/** The dirty ranges of the backup export of target, as nbdinfo reads them. */
async function refereeDirty(target: string): Promise<Array<[number, number]>> {
  const { stdout } = await execFileP('nbdinfo', [`--map=qemu:dirty-bitmap:backup-${target}`, '--json', `nbd+unix:///${target}?socket=${join(work(), 'nbd.sock')}`]);
  return (JSON.parse(stdout) as Array<{ offset: number; length: number; type: number }>).filter((e) => e.type === 1).map((e) => [e.offset, e.length]);
}

beforeAll(async () => {
  if (skip) return;
  lv = await LibvirtSession.start();
  for (const [name, size] of [['d0.qcow2', 16 * MiB], ['d1.qcow2', 8 * MiB]] as const) await referee('qemu-img', ['create', '-q', '-f', 'qcow2', disk(name), String(size)]);
  await referee('qemu-img', ['create', '-q', '-f', 'raw', disk('d2.raw'), String(4 * MiB)]);
  for (const f of ['d0.qcow2', 'd1.qcow2', 'd2.raw']) await lv.own(disk(f));
  const domain = [
    "<domain type='qemu'><name>web01</name><memory unit='MiB'>64</memory><vcpu>2</vcpu>",
    "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>",
    ...tracked.map((d) => `<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${disk(d.file)}'/><target dev='${d.target}' bus='virtio'/></disk>`),
    `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${disk('d2.raw')}'/><target dev='vdc' bus='virtio'/></disk>`,
    "<interface type='user'><mac address='52:54:00:aa:bb:01'/><model type='virtio'/></interface>",
    // A guest agent channel with no agent behind it (no OS): every freeze fails, the points are crash-consistent.
    "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>",
    '</devices></domain>',
  ].join('');
  await writeFile(join(lv.dir, 'web01.xml'), domain);
  await lv.virsh('define', join(lv.dir, 'web01.xml'));
  await lv.virsh('start', 'web01', '--paused');
  await hmpWrite(lv, 'web01', 'virtio-disk0', 0x11, 0, 3 * MiB);
  await hmpWrite(lv, 'web01', 'virtio-disk1', 0x22, MiB, 2 * MiB);

  h = await mergeHarness();
  expect((await operator(h.svc, 'POST', '/v1/tenants', { name: 'acme' })).status).toBe(201);
  expect((await operator(h.svc, 'POST', '/v1/tenants/acme/authorizations', { pattern: '*.acme.test' })).status).toBeLessThan(300);
  const token = (await operator<{ token: string }>(h.svc, 'POST', '/v1/tenants/acme/tokens', {})).body.token;
  state = new AgentState(join(h.env.dir, 'agent'));
  await enroll(state, { serviceUrl: h.svc.agentUrl, token, serverName: 'hv01.acme.test' });
  replicator = new Replicator(await engineContext(state, silentLogger));
}, 180_000);

afterAll(async () => {
  await lv?.stop();
  await h?.close();
}, 60_000);

describe.skipIf(skip !== undefined)('the libvirt source against a private libvirtd', () => {
  it('protect --source libvirt reads the domain, refuses a raw disk with what to do, and starts a checkpoint', async () => {
    const refused = await agent('protect', 'web01', '--source', 'libvirt', '--domain', 'web01', '--connect', lv.uri, '--work-dir', work());
    expect(refused.code).not.toBe(0);
    expect(refused.stderr.trim().split('\n')).toEqual(['lifeboat-agent: VM web01: disk vdc of domain web01 is raw: libvirt\'s checkpoints need qcow2 (convert it, or leave it out with --disk)']);
    const r = await agent('protect', 'web01', '--source', 'libvirt', '--domain', 'web01', '--connect', lv.uri, '--work-dir', work(), '--disk', 'vda', '--disk', 'vdb', '--frequency', '30s', '--json');
    expect(r.stderr).toBe('');
    const config = JSON.parse(r.stdout) as VmConfig & { machine: { hardware: unknown; nics: unknown } };
    expect(config.source).toEqual({ kind: 'libvirt', domain: 'web01', connect: lv.uri, workDir: work(), guestAgent: true });
    expect(config.disks).toEqual(tracked.map((d, i) => ({ id: `disk${i}`, path: disk(d.file), node: d.target })));
    expect(config.machine).toEqual({ hardware: { firmware: 'bios', cpus: 2, memoryMiB: 64, diskBus: 'virtio' }, nics: [{ mac: '52:54:00:aa:bb:01', model: 'virtio', addresses: [] }] });
    const cps = await checkpoints();
    expect(cps).toHaveLength(1);
    expect(cps[0]).toMatch(/^lifeboat-\d+$/);
    const xml = await lv.virsh('checkpoint-dumpxml', 'web01', cps[0]!, '--no-domain');
    expect(xml).toMatch(/<disk name='vda' checkpoint='bitmap'/);
    expect(xml).toMatch(/<disk name='vdb' checkpoint='bitmap'/);
    expect(xml).toMatch(/<disk name='vdc' checkpoint='no'/);
    // Protect again changes nothing in libvirt: the checkpoint covers the disks already.
    expect((await agent('protect', 'web01', '--frequency', '30s')).code).toBe(0);
    expect(await checkpoints()).toEqual(cps);
  }, 120_000);

  it('the first cycle copies the disks from the backup export; the next reads only the dirty extents', async () => {
    const first = await cycle();
    expect(first.outcome, first.error).toBe('ok');
    // The domain has a guest agent channel, so a freeze was asked; nothing answers it (paused, no OS).
    expect(first.stats?.consistency).toBe('crash');
    expect(first.stats?.warnings.some((w) => /^VM web01: domfsfreeze: .*: this point is crash-consistent$/.test(w))).toBe(true);
    await expectPointEqualsDisks();
    const after = await checkpoints();
    expect(after).toHaveLength(1); // the protect checkpoint deleted once both disks were acknowledged
    expect(Number(after[0]!.slice(9))).toBeGreaterThan(0);

    await hmpWrite(lv, 'web01', 'virtio-disk0', 0x33, 5 * MiB + 4 * KiB, 8 * KiB);
    await hmpWrite(lv, 'web01', 'virtio-disk1', 0x44, 7 * MiB, 64 * KiB);
    await hmpWrite(lv, 'web01', 'virtio-disk1', 0x45, 2 * MiB, 4 * KiB);
    // A view opened as the engine opens it, and closed without acknowledging (a cycle that failed):
    // nbdinfo over the same export is the referee for the extents and for what is read.
    const view = await LibvirtVmView.open({ vm: 'web01', domain: 'web01', connect: lv.uri, workDir: work(), disks: tracked.map((d, i) => ({ id: `disk${i}`, target: d.target })), freeze: false });
    const dirty: Record<string, Array<[number, number]>> = {};
    try {
      for (const [i, d] of tracked.entries()) {
        const v = view.disks.get(`disk${i}`)!;
        dirty[d.target] = await refereeDirty(d.target);
        const seen: Array<[number, number]> = [];
        for await (const e of v.cycle.extents()) {
          seen.push([e.offset, e.length]);
          await v.image.read(e.offset, Buffer.alloc(e.length));
        }
        expect(seen, `${d.target} extents`).toEqual(dirty[d.target]);
        const dirtyBytes = seen.reduce((n, [, l]) => n + l, 0);
        expect(v.cycle.changedBytes).toBe(dirtyBytes);
        expect((v.image as unknown as { bytesRead: number }).bytesRead, `${d.target} read only its dirty extents`).toBe(dirtyBytes);
      }
      expect(dirty.vda).toEqual([[5 * MiB, 64 * KiB]]); // one granule (64 KiB, the qcow2 cluster) around the 8 KiB
      expect(dirty.vdb).toEqual([[2 * MiB, 64 * KiB], [7 * MiB, 64 * KiB]]);
    } finally {
      await view.close();
    }
    expect(await checkpoints()).toEqual(after); // not acknowledged: the new checkpoint went, the old one stays

    // The engine's cycle reads the same changes again (and one more write), ships and acknowledges them.
    await hmpWrite(lv, 'web01', 'virtio-disk0', 0x34, 9 * MiB, 64 * KiB);
    const next = await cycle();
    expect(next.outcome, next.error).toBe('ok');
    expect(next.stats?.changedBytes).toBe(4 * 64 * KiB);
    await expectPointEqualsDisks();
    const now = await checkpoints();
    expect(now).toHaveLength(1);
    expect(now[0]).not.toBe(after[0]);
    const status = await agent('status');
    expect(status.stdout).toMatch(new RegExp(`disk0: .* \\(libvirt disk vda, checkpoint ${now[0]}\\)`));
  }, 300_000);

  it('a backup job left by an agent killed mid-cycle is ended by the next cycle; nothing is lost', async () => {
    await hmpWrite(lv, 'web01', 'virtio-disk1', 0x55, 3 * MiB, 64 * KiB);
    // What a killed agent leaves: the job running with its export, a new checkpoint, the old one.
    const dead = await LibvirtVmView.open({ vm: 'web01', domain: 'web01', connect: lv.uri, workDir: work(), disks: tracked.map((d, i) => ({ id: `disk${i}`, target: d.target })), freeze: false });
    for (const v of dead.disks.values()) { await v.image.close(); await v.cycle.end(); }
    expect(await lv.virsh('domjobinfo', 'web01')).toMatch(/Backup/);
    expect(await checkpoints()).toHaveLength(2);
    await hmpWrite(lv, 'web01', 'virtio-disk0', 0x56, 12 * MiB, 64 * KiB);
    const r = await cycle();
    expect(r.outcome, r.error).toBe('ok');
    expect(r.stats?.changedBytes).toBe(2 * 64 * KiB);
    await expectPointEqualsDisks();
    expect(await checkpoints()).toHaveLength(1);
  }, 300_000);

  it('a lost checkpoint is detected and the disks are compared with their replicas (a delta base), then tracked again', async () => {
    for (const c of await checkpoints()) await lv.virsh('checkpoint-delete', 'web01', c);
    await hmpWrite(lv, 'web01', 'virtio-disk0', 0x66, 6 * MiB, 4 * KiB);
    const r = await cycle();
    expect(r.outcome, r.error).toBe('ok');
    expect(r.baseBytes).toBe(24 * MiB);
    await expectPointEqualsDisks();
    const p = await state.readProgress('web01');
    expect(p.disks.disk0!.tracking?.lostAt).not.toBeNull();
    expect(p.disks.disk0!.initial).toMatchObject({ state: 'done', mode: 'delta' });
    await hmpWrite(lv, 'web01', 'virtio-disk1', 0x67, 4 * MiB, 4 * KiB);
    const after = await cycle();
    expect(after.baseBytes).toBe(0);
    expect(after.stats?.changedBytes).toBe(64 * KiB);
    await expectPointEqualsDisks();
  }, 300_000);

  it('a qemu killed with SIGKILL leaves a checkpoint whose bitmap is broken: forgotten, and the disks compared with their replicas', async () => {
    await hmpWrite(lv, 'web01', 'virtio-disk0', 0x68, 10 * MiB, 64 * KiB);
    for (const d of tracked) await lv.virsh('qemu-monitor-command', 'web01', '--hmp', `qemu-io -d /machine/peripheral/${d.alias}/virtio-backend flush`);
    const pid = Number((await readFile(join(lv.dir, 'run', 'libvirt', 'qemu', 'run', 'web01.pid'), 'utf8')).trim());
    process.kill(pid, 'SIGKILL'); // the domain's qemu: started by the test's own daemon
    await until(async () => (await lv.virsh('domstate', 'web01')).trim() === 'shut off', 'libvirt to see its qemu gone');
    await lv.virsh('start', 'web01', '--paused');
    expect(await checkpoints()).toHaveLength(1); // libvirt still lists it; qemu has no consistent bitmap for it
    const r = await cycle();
    expect(r.outcome, r.error).toBe('ok');
    expect(r.stats?.warnings.some((w) => /missing or broken bitmap .*: the checkpoints' bitmaps are gone; comparing every disk with its replica/.test(w))).toBe(true);
    expect(r.baseBytes).toBe(24 * MiB);
    await expectPointEqualsDisks();
    await hmpWrite(lv, 'web01', 'virtio-disk1', 0x69, 5 * MiB, 4 * KiB);
    const after = await cycle();
    expect(after.baseBytes).toBe(0);
    expect(after.stats?.changedBytes).toBe(64 * KiB);
    await expectPointEqualsDisks();
  }, 300_000);

  it('a libvirt socket missing or refusing is one line naming the VM and the connection; the other VMs go on', async () => {
    const missing = join(lv.dir, 'none.sock');
    const uri = `qemu+unix:///session?socket=${missing}`;
    const bad = await agent('protect', 'web02', '--source', 'libvirt', '--domain', 'web02', '--connect', uri);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr.trim().split('\n')).toEqual([`lifeboat-agent: VM web02: libvirt ${uri}: failed to connect to the hypervisor: Failed to connect socket to '${missing}': No such file or directory`]);

    // A socket file nobody listens on: connection refused.
    const refusing = join(lv.dir, 'refusing.sock');
    await execFileP('python3', ['-c', 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', refusing]);
    const web01 = await state.readConfig('web01');
    await state.writeConfig({ ...web01, name: 'gone', disks: [{ id: 'disk0', path: 'x', node: 'vda' }], source: { kind: 'libvirt', domain: 'gone', connect: `qemu+unix:///session?socket=${refusing}`, workDir: join(lv.dir, 'gone'), guestAgent: false } });
    const results = await replicator.runOnce();
    const gone = results.find((x) => x.vm === 'gone')!;
    expect(gone.outcome).toBe('failed');
    expect(gone.error).toMatch(new RegExp(`^VM gone: libvirt qemu\\+unix:///session\\?socket=${refusing.replace(/[.?+]/g, '\\$&')}: failed to connect to the hypervisor: .*Connection refused$`));
    expect(gone.error).not.toMatch(/\n/);
    expect(results.find((x) => x.vm === 'web01')!.outcome).toBe('ok');
    await agent('unprotect', 'gone', '--local');
  }, 300_000);

  it('the final cycle of a planned failover reads a domain shut off by starting it paused, and leaves it off', async () => {
    await hmpWrite(lv, 'web01', 'virtio-disk0', 0x77, 14 * MiB, 64 * KiB);
    await lv.virsh('destroy', 'web01'); // shut off (the guest's own shutdown needs an OS; virsh shutdown asks it)
    expect((await lv.virsh('domstate', 'web01')).trim()).toBe('shut off');
    const final = await runFinalCycle(replicator, 'web01');
    while ((await h.merger.merge()) > 0) { /* until nothing is pending */ }
    expect((await lv.virsh('domstate', 'web01')).trim()).toBe('shut off');
    const point = await cutPoint(h.svc.ctx, h.redis, { tenant: 'acme', vm: 'web01', timeoutMs: 120_000, lockPrefix: h.lockPrefix });
    expect(point.cycle).toBe(final.cycle);
    for (const [i, d] of tracked.entries()) {
      const out = join(h.env.dir, `final-${i}.raw`);
      expect((await operator(h.svc, 'POST', '/v1/tenants/acme/vms/web01/exports', { disk: `disk${i}`, point: String(point.id), format: 'raw', path: out })).status).toBe(201);
      await referee('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'raw', disk(d.file), out]);
    }
  }, 300_000);
});
