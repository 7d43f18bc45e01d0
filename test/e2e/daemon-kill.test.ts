/**
 * The daemon itself killed: `lifeboat-agent run` (not --once) runs as a child process against the real
 * service on the file store, for a VM protected at the shortest frequency (30s) whose cycles the
 * test-only LIFEBOAT_AGENT_TEST_INTERVAL_MS brings down to one a second. While it cycles, qemu-io
 * writes into the VHDX between cycles, and the daemon is SIGKILLed and started again several times:
 * twice in the middle of the initial copy (a chunk's upload on a slow link), as the finished base's
 * map becomes the tracker's baseline (before the base is recorded done), in a later cycle's scan,
 * in the middle of a log's upload, after the service recorded a log's commit but before the daemon
 * heard it, and at random moments between and inside cycles. Each kill is classified afterwards from
 * what it left behind (progress.json, the scan's partial map, the store), so the test fails if the
 * kills did not land where they were aimed. At the end: every log of the generation was committed and
 * applied once and in order (sequences 1..N, none skipped as a duplicate or rejected, none pending),
 * the VM is healthy, and the exported latest point equals the source (`qemu-img compare`).
 *
 * A second test makes the baseline kill deterministic, in-process: the write that records the base
 * done fails; the next pass must finish the base rather than start it over (the service refused the
 * chunks sealed anew in every later cycle before recoverAdoptedBase).
 *
 * Delays are drawn from a seeded generator; the seed is printed (LIFEBOAT_TEST_SEED=... replays it).
 */
import { spawn } from 'node:child_process';
import type { ChildProcessByStdio } from 'node:child_process';
import { mkdirSync, watch } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { expect, it, vi } from 'vitest';
import { silentLogger } from '../../agent/replicate/context.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { engineContext } from '../../agent/replicate/from-state.js';
import { logKey } from '../../shared/objectstore/keys.js';
import { operator } from '../service/helpers.js';
import { MiB, fileStore, storeSuite } from './scenario.js';
import type { Scenario } from './scenario.js';
import { seededRandom } from '../../shared/random.js';

const agentBin = resolve(import.meta.dirname, '../../bin/lifeboat-agent.js');
const KiB = 1024;
const Vm = 'db01';
/** The daemon's cycle interval for this test (LIFEBOAT_AGENT_TEST_INTERVAL_MS). */
const IntervalMs = 1000;
/** A slow link for the kills mid-upload: a 1 MiB log takes about 8 s, a base chunk a few seconds. */
const SlowLink = 128 * KiB;

const seed = Number(process.env.LIFEBOAT_TEST_SEED) || Math.floor(Math.random() * 2 ** 31);
/** Delays that a printed seed replays. */
const random = seededRandom(seed);
const between = (lo: number, hi: number) => Math.floor(lo + random() * (hi - lo));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface LogLine { msg?: string; level?: number; err?: string; [k: string]: unknown }

/** `lifeboat-agent run` as a child process; its pino lines parsed as they come. */
class Daemon {
  readonly lines: LogLine[] = [];
  readonly spawnedAt = Date.now();
  private stderr = '';
  private exited = false;
  private readonly child: ChildProcessByStdio<null, Readable, Readable>;
  readonly closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(stateDir: string) {
    this.child = spawn(process.execPath, [agentBin, 'run', '--state-dir', stateDir], {
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LIFEBOAT_AGENT_TEST_INTERVAL_MS: String(IntervalMs) },
    });
    let partial = '';
    this.child.stderr.on('data', (d: Buffer) => {
      this.stderr += d.toString();
      partial += d.toString();
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        try {
          this.lines.push(JSON.parse(line) as LogLine);
        } catch {
          this.lines.push({ msg: line });
        }
      }
    });
    this.child.stdout.resume();
    this.closed = new Promise((r) => this.child.on('close', (code, signal) => { this.exited = true; r({ code, signal }); }));
  }

  /** Cycles this process finished (its 'cycle' lines). */
  cycles(): number {
    return this.lines.filter((l) => l.msg === 'cycle').length;
  }

  failures(): string[] {
    return this.lines.filter((l) => l.msg === 'cycle failed').map((l) => String(l.err));
  }

  /** Waits until the condition holds (checked every 10 ms); fails when the daemon exits first or after timeoutMs. */
  async until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (await condition()) return;
      if (this.exited) throw new Error(`the daemon exited while waiting for ${what}: ${this.stderr.slice(-2000)}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; daemon stderr: ${this.stderr.slice(-2000)}`);
      await sleep(10);
    }
  }

  /** Waits for n more finished cycles. */
  async cyclesMore(n: number): Promise<void> {
    const target = this.cycles() + n;
    await this.until(() => this.cycles() >= target, `${n} more cycle(s)`);
  }

  /** Sends SIGKILL now (kill() waits for the process to be gone). */
  signalKill(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }

  /** SIGKILL, resolved once the process is gone; how many cycles it had finished. */
  async kill(): Promise<number> {
    const cycles = this.cycles();
    this.signalKill();
    const { signal } = await this.closed;
    expect(signal, `the daemon was not killed: ${this.stderr.slice(-2000)}`).toBe('SIGKILL');
    return cycles;
  }

  /** SIGTERM: the daemon finishes what it is doing and exits 0. */
  async stop(): Promise<void> {
    this.child.kill('SIGTERM');
    const { code } = await this.closed;
    expect(code, this.stderr.slice(-2000)).toBe(0);
    expect(this.lines.some((l) => l.msg === 'agent stopped')).toBe(true);
  }
}

type Phase = 'base upload' | 'base' | 'base adopted' | 'scan' | 'sealing' | 'log upload' | 'commit unheard' | 'between cycles';

interface Kill { aim: Phase | 'anywhere'; phase: Phase; cyclesBefore: number; delayMs: number }

async function fresh(path: string, since: number): Promise<boolean> {
  const st = await stat(path).catch(() => undefined);
  return st !== undefined && st.mtimeMs >= since - 5;
}

/** Where a killed daemon was, from what it left behind. */
async function phaseOf(s: Scenario, d: Daemon): Promise<Phase> {
  const disk = (await s.progress(Vm)).disks.disk0;
  if (disk?.initial.state === 'running') {
    if (disk.inflight.some((o) => o.kind === 'chunk')) return 'base upload';
    // The base's map already renamed to the baseline, its completion not yet recorded.
    const baseline = await stat(join(s.state.vmDir(Vm), 'disk0.map')).catch(() => undefined);
    const initial = await stat(join(s.state.vmDir(Vm), 'disk0.map.initial')).catch(() => undefined);
    return baseline && !initial ? 'base adopted' : 'base';
  }
  const log = disk?.inflight.find((o) => o.kind === 'log');
  if (log) {
    const store = await s.openStore();
    try {
      const head = await store.head(logKey({ tenant: 'acme', vm: Vm, disk: 'disk0' }, log.generation, log.number)).catch(() => undefined);
      return head?.size === log.size ? 'commit unheard' : 'log upload';
    } finally {
      await store.close();
    }
  }
  const vmDir = s.state.vmDir(Vm);
  // A scan writes its map as .map.pending.tmp and renames it when done: one this daemon left was cut.
  if (await fresh(join(vmDir, 'disk0.map.pending.tmp'), d.spawnedAt)) return 'scan';
  const spool = await readdir(join(vmDir, 'spool')).catch(() => [] as string[]);
  for (const f of spool) if (f.endsWith('.hrl.tmp') && (await fresh(join(vmDir, 'spool', f), d.spawnedAt))) return 'sealing';
  return 'between cycles';
}

/** Calls fn at the nth change of a file named name in dir (fs.watch: sees short-lived files too); returns the disarm. */
function onFile(dir: string, name: string, nth: number, fn: () => void): () => void {
  let seen = 0;
  mkdirSync(dir, { recursive: true });
  const watcher = watch(dir, (_event, file) => {
    if (file === name && ++seen === nth) fn();
  });
  return () => watcher.close();
}

storeSuite(fileStore, (use) => {
  it('loses nothing when the daemon (`run`, not --once) is killed again and again: mid-base, mid-scan, mid-upload, after an unheard commit', async (ctx) => {
    const s = use(ctx);
    console.log(`daemon-kill: LIFEBOAT_TEST_SEED=${seed}`);
    const started = performance.now();
    const vmDir = s.state.vmDir(Vm);
    const kills: Kill[] = [];
    const daemons: Daemon[] = [];
    const start = () => {
      const d = new Daemon(s.state.dir);
      daemons.push(d);
      return d;
    };
    const record = async (d: Daemon, aim: Kill['aim'], delayMs: number) => {
      const cyclesBefore = await d.kill();
      const phase = await phaseOf(s, d);
      kills.push({ aim, phase, cyclesBefore, delayMs });
      return phase;
    };
    const setBandwidth = async (bandwidthBytesPerSec: number | null) => {
      await s.state.writeConfig({ ...(await s.state.readConfig(Vm)), bandwidthBytesPerSec });
    };
    const merge = () => s.merger.merge();

    // 64 MiB, 384 KiB of incompressible bytes in each of its eight 8 MiB base chunks, protected at 30s.
    const disk = await s.newDisk(Vm, '64M', 'write -P 0x5a 0 2M', 'write -P 0x21 33M 1M');
    for (let i = 0; i < 8; i++) await s.writeRandom(disk, i * 8 * MiB + 4 * MiB, 384 * KiB);
    await s.protect(Vm, [disk], { frequencyMs: 30_000, bandwidthBytesPerSec: SlowLink });
    const chunksDone = async () => Buffer.from((await s.progress(Vm)).disks.disk0?.initial.chunksDone ?? '', 'base64').reduce((n, b) => n + popcount(b), 0);

    // 1. The initial copy, a chunk's upload under way on the slow link.
    let d = start();
    let seenAt = 0;
    await d.until(async () => ((await s.progress(Vm)).disks.disk0?.inflight.some((o) => o.kind === 'chunk') ?? false), 'a base chunk in flight');
    seenAt = Date.now();
    let delay = between(200, 1500);
    await sleep(seenAt + delay - Date.now());
    expect(await record(d, 'base upload', delay)).toMatch(/^base/);
    await s.write(disk, 'write -P 0x61 5M 256k'); // while it is down: changes during the base

    // 2. The resumed initial copy, once it has finished one more chunk.
    d = start();
    const done = await chunksDone();
    await d.until(async () => (await chunksDone()) > done, 'one more base chunk done');
    delay = between(0, 1000);
    await sleep(delay);
    expect(await record(d, 'base upload', delay)).toMatch(/^base/);
    await setBandwidth(null);
    await merge();

    // 3. Steady cycles: the scan of a later cycle of this daemon, killed at the 1st to 3rd change of
    // the partial map it writes; tried again when the scan finished first.
    // Before that, the daemon that finishes the base is killed as the base's block map becomes the
    // tracker's baseline (renamed to disk0.map): the service has the whole base, the agent may not
    // have recorded it yet.
    d = start();
    {
      let hit = false;
      const victim = d;
      const disarm = onFile(vmDir, 'disk0.map', 1, () => { hit = true; victim.signalKill(); });
      try {
        await d.until(() => hit, 'the base adopted');
      } finally {
        disarm();
      }
      await record(d, 'base adopted', 0);
    }
    d = start();
    await d.cyclesMore(1); // the base finished and its first log went out
    await merge();
    for (let attempt = 0; attempt < 3; attempt++) {
      if (attempt > 0) {
        d = start();
        await d.cyclesMore(1);
      }
      await s.write(disk, `write -P 0x${(0x62 + attempt).toString(16)} ${between(0, 60)}M 128k`); // between cycles
      let hit = false;
      const victim = d;
      const disarm = onFile(vmDir, 'disk0.map.pending.tmp', between(1, 4), () => { hit = true; victim.signalKill(); });
      try {
        await d.until(() => hit, 'a scan', 15_000);
      } finally {
        disarm();
      }
      if ((await record(d, 'scan', 0)) === 'scan') break;
    }

    // 4. A log's upload on the slow link, at a random moment into it.
    await setBandwidth(SlowLink); // while it is down: every cycle of the next daemon runs on the slow link
    d = start();
    await d.cyclesMore(1);
    const next = (await s.progress(Vm)).disks.disk0!.nextSequence;
    await s.writeRandom(disk, 40 * MiB, MiB);
    await d.until(async () => ((await s.progress(Vm)).disks.disk0?.inflight.some((o) => o.kind === 'log' && o.size >= 512 * KiB && o.number >= next) ?? false), 'the 1 MiB log in flight');
    delay = between(300, 2500);
    await sleep(delay);
    expect(await record(d, 'log upload', delay)).toBe('log upload');
    await setBandwidth(null);
    await s.write(disk, 'write -P 0x71 41M 64k');

    // 5. The service recorded a log's commit; the daemon is killed before it hears the answer.
    d = start();
    await d.cyclesMore(between(1, 3));
    await s.write(disk, `write -P 0x72 ${between(0, 60)}M 64k`);
    const commitHeard = d;
    await new Promise<void>((r) => {
      s.onCommit()(async () => {
        commitHeard.kill().then(() => r(), () => r());
        await commitHeard.closed;
      });
    });
    kills.push({ aim: 'commit unheard', phase: await phaseOf(s, commitHeard), cyclesBefore: commitHeard.cycles(), delayMs: 0 });
    await merge();

    // 6. At random moments of steady cycling, between or inside cycles.
    for (let i = 0; i < 3; i++) {
      d = start();
      await d.cyclesMore(1);
      await s.write(disk, `write -P 0x${(0x73 + i).toString(16)} ${between(0, 62)}M ${between(1, 32) * 4}k`);
      delay = between(0, 2 * IntervalMs);
      await sleep(delay);
      await record(d, 'anywhere', delay);
      if (i === 1) await merge();
    }

    // The last daemon catches up, two full cycles after the last write, and stops on SIGTERM.
    d = start();
    await d.cyclesMore(1);
    await s.write(disk, 'write -P 0x7f 63M 64k');
    await d.cyclesMore(2);
    await d.stop();

    console.log(`daemon-kill: ${kills.length} kills in ${Math.round(performance.now() - started)} ms:\n${kills.map((k) => `  aimed at ${k.aim}: landed in ${k.phase}, after ${k.cyclesBefore} cycle(s) of that daemon, delay ${k.delayMs} ms`).join('\n')}`);
    const failures = daemons.flatMap((x) => x.failures());
    if (failures.length > 0) console.log(`daemon-kill: cycles failed and retried: ${failures.join('; ')}`);

    // The kills landed where they were aimed, and several hit a cycle after the daemon had run one.
    const landed = (phase: Phase) => kills.filter((k) => k.phase === phase).length;
    expect(kills.filter((k) => k.aim === 'base upload' && /^base/.test(k.phase))).toHaveLength(2);
    expect(landed('scan'), 'a kill in a scan').toBeGreaterThanOrEqual(1);
    expect(landed('log upload'), 'a kill mid-upload').toBeGreaterThanOrEqual(1);
    expect(kills.filter((k) => k.aim === 'commit unheard' && k.phase === 'commit unheard'), 'a kill after an unheard commit').toHaveLength(1);
    expect(kills.filter((k) => k.cyclesBefore >= 1 && k.phase !== 'between cycles').length, 'kills inside a later cycle of a running daemon').toBeGreaterThanOrEqual(3);

    // The agent: nothing in flight, nothing left in its spool.
    const progress = (await s.progress(Vm)).disks.disk0!;
    expect(progress).toMatchObject({ generation: 1, inflight: [], initial: { state: 'done' } });
    expect((await readdir(join(vmDir, 'spool')).catch(() => [])).filter((f) => f.endsWith('.hrl'))).toEqual([]);

    // The service: every log of the generation committed once, in order, each applied; none skipped
    // as a duplicate, rejected or still pending.
    await merge();
    const rows = await s.svc.ctx.db.query<{ kind: string; generation: number; sequence: number; status: string }>(
      `SELECT kind, generation, sequence, status FROM logs WHERE tenant = 'acme' AND vm = $1 AND disk = 'disk0' ORDER BY kind, generation, sequence`, [Vm]);
    const logs = rows.filter((r) => r.kind === 'log');
    const last = progress.nextSequence - 1;
    expect(logs.map((r) => `${r.generation}/${r.sequence}`)).toEqual(Array.from({ length: last }, (_, i) => `1/${i + 1}`));
    expect(rows.filter((r) => r.status !== 'applied')).toEqual([]);
    expect(rows.filter((r) => r.kind === 'chunk').map((r) => r.sequence)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    // Every finished cycle shipped one log; a killed cycle at most one more.
    const cycles = daemons.reduce((n, x) => n + x.cycles(), 0);
    expect(last).toBeGreaterThanOrEqual(cycles);
    expect(last).toBeLessThanOrEqual(cycles + kills.length);

    const list = await operator<{ vms: { name: string; state: string; health: string; pendingLogs: number; disks: { id: string; appliedSequence: number; generation: number }[] }[] }>(s.svc, 'GET', '/v1/vms?tenant=acme');
    const vm = list.body.vms.find((v) => v.name === Vm);
    expect(vm).toMatchObject({ state: 'replicating', health: 'normal', pendingLogs: 0, disks: [{ id: 'disk0', generation: 1, appliedSequence: last }] });
    const points = await operator<{ points: { id: string }[] }>(s.svc, 'GET', `/v1/tenants/acme/vms/${Vm}/points`);
    expect(points.body.points.map((p) => p.id)).toContain('latest');
    await s.expectReplicaEqualsSource(Vm, 'disk0', disk);
    console.log(`daemon-kill: ${last} logs applied in order, ${cycles} cycles finished, ${Math.round(performance.now() - started)} ms`);
  }, 150_000);

  it('finishes a base whose agent died between adopting its map and recording it done, instead of starting it over', async (ctx) => {
    const s = use(ctx);
    if ((await s.state.listVms()).includes(Vm)) await s.state.writeConfig({ ...(await s.state.readConfig(Vm)), paused: true });
    const disk = await s.newDisk('db02', '24M', 'write -P 0x33 1M 2M', 'write -P 0x34 17M 1M');
    await s.protect('db02', [disk]);
    // The write that records the base done fails, as when the agent dies right before it: the
    // service holds the base complete and the base's map is the tracker's baseline already.
    const real = s.state.writeProgress.bind(s.state);
    const spy = vi.spyOn(s.state, 'writeProgress').mockImplementation(async (vm, p) => {
      if (vm === 'db02' && p.disks.disk0?.initial.state === 'done') throw new Error('killed before the base was recorded done');
      return real(vm, p);
    });
    try {
      const [r] = await new Replicator({ ...(await engineContext(s.state, silentLogger)), retry: { attempts: 1 } }).runOnce().then((x) => x.filter((y) => y.vm === 'db02'));
      expect(r).toMatchObject({ outcome: 'failed', error: expect.stringContaining('killed before') });
    } finally {
      spy.mockRestore();
    }
    const vmDir = s.state.vmDir('db02');
    // Every chunk done: the two 8 MiB slots holding data (at 1 MiB and 17 MiB); the hole between is no chunk.
    expect((await s.progress('db02')).disks.disk0!.initial).toMatchObject({ state: 'running', generation: 1, bytesDone: 16 * MiB, bytesTotal: 16 * MiB });
    expect(await stat(join(vmDir, 'disk0.map.initial')).catch(() => undefined)).toBeUndefined();
    expect((await stat(join(vmDir, 'disk0.map'))).isFile()).toBe(true);

    // The next pass records the base done (it used to start it over, refused ever after) and ships the changes.
    await s.write(disk, 'write -P 0x35 9M 64k');
    await s.runOnce();
    expect((await s.progress('db02')).disks.disk0).toMatchObject({ generation: 1, nextSequence: 2, inflight: [], initial: { state: 'done' } });
    await s.expectReplicaEqualsSource('db02', 'disk0', disk);
  });
});

function popcount(b: number): number {
  let n = 0;
  for (; b; b &= b - 1) n++;
  return n;
}
