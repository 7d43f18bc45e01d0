/**
 * The hyperv source without a Windows host. FakeHypervHost is a FAKE (no Hyper-V host runs here): a
 * recording runner that checks every script the agent sends against the golden files in
 * golden/hyperv-source/ (UPDATE_GOLDEN=1 rewrites them) and answers as a host would, from what the
 * test scripts: the checkpoint's file, the ranges resilient change tracking reports, the reference
 * points that exist.
 * Real parts: the checkpoint's file is a real VHDX made by our writer and read by our VHDX reader
 * through the path map; the engine seals, ships and commits real logs to the test's fake service
 * (local-service.ts: a real file object store, logs opened and applied by the real log reader into raw
 * replicas); qemu-img compares each replica with the VHDX.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { protectHyperv } from '../../agent/cli/protect-hyperv.js';
import { silentLogger, type EngineContext } from '../../agent/replicate/context.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { stopHypervVm } from '../../agent/sources/hyperv-view.js';
import { StateVersion, type VmConfig } from '../../agent/state/schema.js';
import { AgentState } from '../../agent/state/store.js';
import { generateKeyPair } from '../../shared/crypto/keys.js';
import { createDisk, openDisk } from '../../shared/disk/index.js';
import { isLifeboatError, LifeboatError } from '../../shared/errors.js';
import { scriptStep } from '../../shared/hyperv/ps.js';
import type { HypervRunner, RunResult } from '../../shared/hyperv/runner.js';
import { FileStore } from '../../shared/objectstore/file.js';
import { execFileP, runBin, scratchDir } from '../helpers.js';
import { LocalService } from './local-service.js';

const GoldenDir = join(dirname(fileURLToPath(import.meta.url)), 'golden', 'hyperv-source');
const update = process.env.UPDATE_GOLDEN === '1';
const MiB = 1 << 20;
const KiB = 1024;
/** A VM name a tenant could give its VM on the host: quotes of each kind, a subexpression, a wildcard, a statement separator. */
const HostileName = "web'01’; Remove-VM * -Force; $(Stop-Computer) `#";

type Answer = Partial<RunResult> & { json?: unknown };

/** FAKE Hyper-V host: records each script, checks it against `<scenario>/<nn>-<step>.ps1`, answers through `answer`. */
class FakeHypervHost implements HypervRunner {
  readonly host = 'hv-fake.test';
  readonly scripts: string[] = [];
  scenario: string | undefined;
  private count = 0;

  constructor(private readonly answer: (step: string, script: string) => Answer) {}

  startScenario(name: string): void {
    this.scenario = name;
    this.count = 0;
  }

  async run(script: string): Promise<RunResult> {
    this.scripts.push(script);
    const step = scriptStep(script) ?? 'unknown';
    if (this.scenario) {
      const file = join(GoldenDir, this.scenario, `${String(++this.count).padStart(2, '0')}-${step}.ps1`);
      if (update) {
        await mkdir(dirname(file), { recursive: true });
        await writeFile(file, script);
      } else {
        expect(script, `golden ${file}`).toBe(await readFile(file, 'utf8'));
      }
    }
    const a = this.answer(step, script);
    return { exitCode: a.exitCode ?? 0, stdout: a.stdout ?? `${JSON.stringify(a.json ?? {})}\r\n`, stderr: a.stderr ?? '' };
  }

  steps(): string[] {
    return this.scripts.map((s) => scriptStep(s) ?? '?');
  }
}

/** The value of the PowerShell single-quoted literal that starts at `at` (PowerShell's rule, independent of psQuote). */
function readPsLiteral(text: string, at: number): string {
  const quotes = "'\u2018\u2019\u201a\u201b";
  let value = '';
  for (let i = at + 1; i < text.length; i++) {
    if (quotes.includes(text[i]!)) {
      const after = text[i + 1];
      if (after !== undefined && quotes.includes(after)) { value += text[i]; i++; continue; }
      return value;
    }
    value += text[i];
  }
  throw new Error('unterminated literal');
}

describe('the hyperv source against a fake Hyper-V host', () => {
  let dir: Awaited<ReturnType<typeof scratchDir>>;
  let vhdx: string;
  let state: AgentState;
  let service: LocalService;
  let replicator: Replicator;
  let host: FakeHypervHost;
  // What the fake host holds.
  const rps = new Set<string>();
  let nextId = 1;
  let ranges: Array<[number, number]> = [];

  const windowsFile = 'D:\\Hyper-V\\web01\\Virtual Hard Disks\\web01.vhdx';

  beforeAll(async () => {
    dir = await scratchDir('lifeboat-hypervsrc-');
    await mkdir(join(dir.path, 'share', 'web01', 'Virtual Hard Disks'), { recursive: true });
    vhdx = join(dir.path, 'share', 'web01', 'Virtual Hard Disks', 'web01.vhdx');
    const disk = await createDisk(vhdx, 'vhdx', { virtualSize: 16 * MiB, blockSize: MiB });
    await disk.write(0, Buffer.alloc(3 * MiB, 0x11));
    await disk.write(9 * MiB + 512, Buffer.alloc(200 * KiB, 0x22));
    await disk.close();

    host = new FakeHypervHost((step, script) => {
      switch (step) {
        case 'rct-describe':
          return { json: { generation: 2, cpus: 4, memoryBytes: 4096 * MiB, secureBoot: true, state: 'Running', version: '10.0', disks: { slot: 'SCSI:0:0', path: windowsFile }, nics: [{ mac: '00155D0A0001', addresses: ['10.20.0.7', 'fe80::5', '2001:db8::7'] }, { mac: '000000000000', addresses: null }] } };
        case 'rct-checkpoint': {
          const asked = /\$rp = .* -eq ('.*?') \| Select-Object/.exec(script);
          const rp = asked ? readPsLiteral(asked[1]!, 0) : undefined;
          const found = rp !== undefined && rps.has(rp);
          return { json: { checkpoint: `Microsoft:CHECKPOINT-${nextId++}`, referencePointFound: found, consistency: 'application', warning: null, disks: [{ slot: 'SCSI:0:0', file: windowsFile, size: 16 * MiB, lost: !found, ranges: found ? ranges : null }] } };
        }
        case 'rct-convert': {
          const id = `Microsoft:RP-${nextId++}`;
          rps.add(id);
          return { json: { referencePoint: id } };
        }
        case 'rct-release': {
          const m = /\$rp = .* -eq ('.*?') \| Select-Object/.exec(script);
          if (m) rps.delete(readPsLiteral(m[1]!, 0));
          return { json: { released: 1 } };
        }
        case 'rct-stop':
          return { json: { state: /Stop-VM/.test(script) ? 'Off' : 'Running' } };
        default:
          return { exitCode: 1, stderr: `fake host: no answer for ${step}` };
      }
    });

    state = new AgentState(join(dir.path, 'state'));
    await state.init();
    await mkdir(join(dir.path, 'replicas'));
    const keys = await generateKeyPair();
    service = new LocalService(new FileStore(join(dir.path, 'store')), 'acme', keys.privateKey, join(dir.path, 'replicas'));
    const ctx: EngineContext = {
      state, transport: service, tenant: 'acme', recipient: keys.publicKey, logger: silentLogger, now: () => new Date(), retry: { attempts: 1 }, sealThreads: 1,
      hypervRunner: () => host,
    };
    replicator = new Replicator(ctx);
  }, 30_000);
  afterAll(async () => dir?.remove());

  async function write(offset: number, data: Buffer): Promise<void> {
    const disk = await openDisk(vhdx);
    try { await disk.write(offset, data); } finally { await disk.close(); }
  }

  /** qemu-img's verdict on the replica against the VHDX: true when their contents are identical. */
  async function replicaEqual(): Promise<boolean> {
    try {
      await execFileP('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'vhdx', service.replicaPath('web01', 'disk0'), vhdx]);
      return true;
    } catch (err) {
      if ((err as { code?: number }).code === 1) return false;
      throw err;
    }
  }

  it('protect reads the VM from the host: its disk by slot, opened through the path map, and its machine', async () => {
    host.startScenario('protect');
    const p = await protectHyperv('web01', { vmName: HostileName, host: 'hv01.example.net', sshUser: 'lifeboat', pathMap: [`D:\\Hyper-V=${join(dir.path, 'share')}`] }, undefined, () => host);
    expect(p.disks).toEqual([{ id: 'disk0', path: windowsFile, node: 'SCSI:0:0' }]);
    expect(p.describe).toEqual([`disk0 SCSI:0:0 ${windowsFile} (vhdx, 16.0 MiB)`]);
    expect(p.hardware).toEqual({ firmware: 'uefi', secureBoot: true, cpus: 4, memoryMiB: 4096, diskBus: 'scsi' });
    expect(p.nics).toEqual([{ mac: '00:15:5d:0a:00:01', addresses: ['10.20.0.7', '2001:db8::7'] }]);
    expect(p.source).toMatchObject({ kind: 'hyperv', vmName: HostileName, host: 'hv01.example.net', user: 'lifeboat', paths: [{ windows: 'D:\\Hyper-V', local: join(dir.path, 'share') }] });
    const config: VmConfig = {
      version: StateVersion, name: 'web01', disks: p.disks, frequencyMs: 300_000, history: 0, appConsistentEveryMs: null, preSnapshot: null, postSnapshot: null,
      shutdownHook: null, compression: 'zstd', initial: { mode: 'network' }, startAt: null, bandwidthBytesPerSec: null, paused: false, createdAt: new Date().toISOString(), source: p.source,
    };
    await state.writeConfig(config);
  });

  it('a VM name with a control character is refused with one line, before any script runs', async () => {
    const before = host.scripts.length;
    const err = await protectHyperv('web02', { vmName: 'web\n02', host: 'hv01.example.net' }, undefined, () => host).catch((e: unknown) => e);
    expect(isLifeboatError(err) && err.code).toBe('invalid_argument');
    expect((err as Error).message).toBe('vm name: "web\\n02" holds a control character (U+000A)');
    expect(host.scripts.length).toBe(before);
  });

  it('the first cycle has no reference point: the disk is copied whole from the checkpoint, which becomes the reference point', async () => {
    host.startScenario('first-cycle');
    const r = await replicator.cycle('web01');
    expect(r.outcome).toBe('ok');
    expect(r.stats?.consistency).toBe('application');
    expect(host.steps().slice(-3)).toEqual(['rct-checkpoint', 'rct-describe', 'rct-convert']);
    expect(await replicaEqual()).toBe(true);
    expect([...rps]).toEqual(['Microsoft:RP-2']);
    expect(JSON.parse(await readFile(join(state.vmDir('web01'), 'hyperv.json'), 'utf8'))).toEqual({ referencePoint: 'Microsoft:RP-2', checkpoint: null, release: [] });
    const p = await state.readProgress('web01');
    expect(p.disks.disk0!.tracking).toEqual({ node: 'SCSI:0:0', bitmap: '', granularity: 0, lostAt: null }); // no reference point yet: nothing lost
    expect(p.machine).toMatchObject({ hardware: { firmware: 'uefi', cpus: 4 }, nics: [{ mac: '00:15:5d:0a:00:01' }] });
  }, 60_000);

  it('the next cycle ships exactly the ranges RCT reports, read from the checkpoint\'s VHDX; the old reference point is destroyed after the acknowledgement', async () => {
    host.startScenario('next-cycle');
    await write(5 * MiB + 4 * KiB, Buffer.alloc(64 * KiB, 0x33));
    await write(12 * MiB, Buffer.alloc(8 * KiB, 0x44));
    ranges = [[12 * MiB, 8 * KiB], [5 * MiB + 4 * KiB, 64 * KiB]];
    const r = await replicator.cycle('web01');
    expect(r.outcome).toBe('ok');
    expect(r.stats).toMatchObject({ logs: 1, changedBytes: 72 * KiB, consistency: 'application' });
    expect(await replicaEqual()).toBe(true);
    expect([...rps]).toEqual(['Microsoft:RP-4']);
    // status: the disk's source, slot and the reference point this cycle counted from.
    const status = await runBin('agent', ['status', '--json'], { env: { LIFEBOAT_AGENT_STATE: state.dir } });
    const vm = (JSON.parse(status.stdout) as { vms: Array<{ lastConsistency: string; disks: Array<{ source: string; tracking: { node: string; bitmap: string } }> }> }).vms[0]!;
    expect([vm.lastConsistency, vm.disks[0]!.source, vm.disks[0]!.tracking.node, vm.disks[0]!.tracking.bitmap]).toEqual(['application', 'hyperv', 'SCSI:0:0', 'Microsoft:RP-2']);
    expect((await runBin('agent', ['status'], { env: { LIFEBOAT_AGENT_STATE: state.dir } })).stdout).toContain('(hyperv SCSI:0:0, reference point Microsoft:RP-2)');
    // A write RCT does not report is not shipped: the replica differs until a resync.
    await write(14 * MiB, Buffer.alloc(4 * KiB, 0x55));
    ranges = [];
    const quiet = await replicator.cycle('web01');
    expect(quiet.stats).toMatchObject({ logs: 1, changedBytes: 0 });
    expect(await replicaEqual()).toBe(false);
  }, 60_000);

  it('a reference point that vanished from the host: the disk is compared with its replica (a delta base), then tracked from a new one', async () => {
    host.startScenario('vanished');
    rps.clear();
    const r = await replicator.cycle('web01');
    expect(r.outcome).toBe('ok');
    expect(r.stats?.warnings.some((w) => /reference point Microsoft:RP-6 is gone from the host/.test(w))).toBe(true);
    expect(await replicaEqual()).toBe(true);
    const p = await state.readProgress('web01');
    expect(p.disks.disk0!.tracking?.lostAt).not.toBeNull();
    expect(p.disks.disk0!.initial).toMatchObject({ state: 'done', mode: 'delta' });
    expect(rps.size).toBe(1);
  }, 60_000);

  it('a cycle the service does not acknowledge destroys its checkpoint and keeps the reference point; the next cycle ships the changes again', async () => {
    const kept = [...rps][0]!;
    await write(2 * MiB, Buffer.alloc(16 * KiB, 0x66));
    ranges = [[2 * MiB, 16 * KiB]];
    host.startScenario('unacknowledged');
    service.down = true;
    const failed = await replicator.runOnce();
    service.down = false;
    expect(failed[0]!.outcome).toBe('failed');
    expect([...rps]).toEqual([kept]);
    expect(JSON.parse(await readFile(join(state.vmDir('web01'), 'hyperv.json'), 'utf8'))).toEqual({ referencePoint: kept, checkpoint: null, release: [] });
    const r = await replicator.cycle('web01');
    expect(r.outcome).toBe('ok');
    expect(r.stats).toMatchObject({ changedBytes: 16 * KiB });
    expect(await replicaEqual()).toBe(true);
  }, 60_000);

  it('what a killed agent left (a checkpoint not settled, a replaced reference point not destroyed) is destroyed by the next cycle first', async () => {
    const current = [...rps][0]!;
    rps.add('Microsoft:RP-OLD');
    const file = join(state.vmDir('web01'), 'hyperv.json');
    await writeFile(file, JSON.stringify({ referencePoint: current, checkpoint: 'Microsoft:CHECKPOINT-LEFT', release: ['Microsoft:RP-OLD'] }));
    ranges = [];
    host.startScenario('killed');
    const r = await replicator.cycle('web01');
    expect(r.outcome).toBe('ok');
    const [release, checkpoint] = host.scripts.slice(-5, -3);
    expect(scriptStep(release!)).toBe('rct-release');
    expect(release).toContain("Where-Object InstanceID -eq 'Microsoft:RP-OLD'");
    expect(checkpoint).toContain("$old = @(& $snaps | Where-Object InstanceID -eq 'Microsoft:CHECKPOINT-LEFT')");
    expect(rps.has('Microsoft:RP-OLD')).toBe(false);
    expect(JSON.parse(await readFile(file, 'utf8'))).toMatchObject({ checkpoint: null, release: [] });
    expect(await replicaEqual()).toBe(true);
  }, 60_000);

  it('every script quotes the hostile VM name so that PowerShell reads it back whole', () => {
    for (const s of host.scripts) {
      const at = s.indexOf('$name = ');
      expect(at, s).toBeGreaterThan(0);
      expect(readPsLiteral(s, at + '$name = '.length)).toBe(HostileName);
      expect(s).not.toContain('-Name $name');
    }
  });

  it('planned failover: Stop-VM, and a VM that stays on is one line', async () => {
    host.startScenario('planned-failover');
    await stopHypervVm(host, 'web01', HostileName, 60_000);
    const stuck = new FakeHypervHost(() => ({ json: { state: 'Running' } }));
    await expect(stopHypervVm(stuck, 'web01', HostileName, 60_000)).rejects.toThrow('VM web01: still Running 60 s after Stop-VM (are its integration services running?)');
    const refusing = new FakeHypervHost(() => ({ exitCode: 1, stderr: 'Access is denied.\r\n' }));
    await expect(stopHypervVm(refusing, 'web01', HostileName, 60_000)).rejects.toThrow('VM web01: hyperv host hv-fake.test: rct-stop: Access is denied.');
    const unreachable: HypervRunner = { host: 'hv-gone.test', run: () => Promise.reject(new LifeboatError('unavailable', 'hyperv host hv-gone.test: ssh: connect to host hv-gone.test port 22: Connection refused')) };
    await expect(stopHypervVm(unreachable, 'web01', HostileName, 60_000)).rejects.toThrow(/^VM web01: hyperv host hv-gone\.test: ssh: connect to host hv-gone\.test port 22: Connection refused$/);
  });
});
