/**
 * The agent's whole path against the real service, shared by the e2e files so that every object
 * store runs the same scenario: the service on embedded defaults (PGlite catalog, VHDX replicas) on
 * the file store, on s3rver or on Azurite (started here), a tenant, an agent enrolled by its own code, VHDX disks made by
 * qemu-img and written by qemu-io, cycles run in-process or as `lifeboat-agent run --once` (killed
 * where a test says), merges by Merger.merge() (no timers), the latest point exported and compared
 * with the source by `qemu-img compare`.
 *
 * storeSuite(store, body) opens one describe per store: outside CI an emulator that cannot start skips
 * the suite with its reason printed; under CI (emulatorsMustRun) it fails the run.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, watch } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import type { TestContext } from 'vitest';
import { enroll } from '../../agent/enroll/enroll.js';
import type { EngineContext } from '../../agent/replicate/context.js';
import { silentLogger } from '../../agent/replicate/context.js';
import type { VmCycleResult } from '../../agent/replicate/engine.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { engineContext } from '../../agent/replicate/from-state.js';
import type { VmConfig, VmProgress } from '../../agent/state/schema.js';
import { AgentState } from '../../agent/state/store.js';
import { userMessage } from '../../shared/errors.js';
import { openObjectStore } from '../../shared/objectstore/index.js';
import type { ObjectStore } from '../../shared/objectstore/index.js';
import type { RunningService } from '../../service/runner.js';
import { Merger } from '../../service/workers/merger.js';
import { referee, TestRedisUrl } from '../helpers.js';
import type { Emulator } from '../objectstore/emulators.js';
import { emulatorsMustRun, startAzurite, startS3rver } from '../objectstore/emulators.js';
import type { TestEnv } from '../service/helpers.js';
import { operator, testEnv, testService } from '../service/helpers.js';

const agentBin = resolve(import.meta.dirname, '../../bin/lifeboat-agent.js');
export const MiB = 1 << 20;

export interface StoreCase {
  name: string;
  /** A start failure fails the run instead of skipping the suite. */
  mustRun: boolean;
  /** The emulator to put the service on; none for the file store under the data directory. */
  start?: (bucket: string) => Promise<Emulator>;
}

export const fileStore: StoreCase = { name: 'the file store', mustRun: true };
export const s3rverStore: StoreCase = { name: 's3rver', mustRun: emulatorsMustRun, start: startS3rver };
export const azuriteStore: StoreCase = { name: 'Azurite', mustRun: emulatorsMustRun, start: startAzurite };

/** What a running agent run did when watched by runAgent. */
export interface AgentRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Whether the watch killed it (SIGKILL). */
  killed: boolean;
  stdout: string;
  stderr: string;
  ms: number;
}

/** One service on one store with one enrolled agent (tenant acme, server hv01.acme.test). */
export class Scenario {
  private constructor(
    readonly store: StoreCase,
    readonly env: TestEnv,
    readonly svc: RunningService,
    readonly merger: Merger,
    readonly state: AgentState,
    private readonly redis: Redis,
    private readonly emulator: Emulator | undefined,
    private readonly restoreEnv: () => void,
    private readonly commitListeners: Set<() => Promise<void>>,
  ) {}

  /** Puts the service on the emulator's store (or the file store) and enrolls the agent. */
  static async start(store: StoreCase, emulator: Emulator | undefined): Promise<Scenario> {
    // The service in this process reads the store's credentials from the environment.
    const saved = { ...process.env };
    const restoreEnv = () => { process.env = saved; };
    if (emulator) {
      for (const [k, v] of Object.entries(emulator.env)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    try {
      const env = await testEnv((c) => {
        // Embedded defaults as `lifeboat-service init` writes them (PGlite catalog, VHDX replicas);
        // only the object store differs per case.
        c.catalog = { kind: 'pglite', dir: 'catalog' };
        c.replicaFormat = 'vhdx';
        if (emulator) c.objectStore = { url: emulator.url };
      });
      // The service calls enqueue once it has recorded a commit of a log or a base, before it answers
      // (and after each chunk of a base, which is not what the listeners wait for).
      const commitListeners = new Set<() => Promise<void>>();
      const svc = await testService(env, async (_ref, cause) => {
        if (cause === 'chunk') return;
        for (const listener of commitListeners) await listener();
      });
      const redis = new Redis(TestRedisUrl, { maxRetriesPerRequest: null });
      const merger = new Merger(svc.ctx, redis, `lifeboat-test-${env.schema}`);
      expect((await operator(svc, 'POST', '/v1/tenants', { name: 'acme' })).status).toBe(201);
      expect((await operator(svc, 'POST', '/v1/tenants/acme/authorizations', { pattern: '*.acme.test' })).status).toBeLessThan(300);
      const token = (await operator<{ token: string }>(svc, 'POST', '/v1/tenants/acme/tokens', {})).body.token;
      const state = new AgentState(join(env.dir, 'agent'));
      await enroll(state, { serviceUrl: svc.agentUrl, token, serverName: 'hv01.acme.test' });
      return new Scenario(store, env, svc, merger, state, redis, emulator, restoreEnv, commitListeners);
    } catch (err) {
      restoreEnv();
      await emulator?.stop();
      throw err;
    }
  }

  async stop(): Promise<void> {
    this.redis.disconnect();
    await this.svc.stop();
    await this.env.cleanup();
    await this.emulator?.stop();
    this.restoreEnv();
  }

  /** The store the service uses, opened anew (close it after use). */
  openStore(): Promise<ObjectStore> {
    return openObjectStore(this.svc.ctx.config.objectStore.url, { env: this.emulator?.env ?? process.env });
  }

  /** A dynamic VHDX made by qemu-img, then written by qemu-io (commands as `write -P 0x5a 1M 2M`). */
  async newDisk(name: string, size: string, ...writes: string[]): Promise<string> {
    const path = join(this.env.dir, `${name}.vhdx`);
    await referee('qemu-img', ['create', '-q', '-f', 'vhdx', path, size]);
    if (writes.length > 0) await this.write(path, ...writes);
    return path;
  }

  /** qemu-io writes into a disk. */
  async write(path: string, ...writes: string[]): Promise<void> {
    await referee('qemu-io', [...writes.flatMap((w) => ['-c', w]), path]);
  }

  /** qemu-io writes `length` random bytes at `offset` (incompressible: what is sent is what changed). */
  async writeRandom(path: string, offset: number, length: number): Promise<void> {
    const source = join(this.env.dir, `random-${randomBytes(4).toString('hex')}`);
    await writeFile(source, randomBytes(length));
    await this.write(path, `write -s ${source} ${offset} ${length}`);
  }

  /** Protects a VM the way `lifeboat-agent protect` records it. */
  async protect(vm: string, disks: string[], settings: Partial<VmConfig> = {}): Promise<void> {
    await this.state.writeConfig({
      version: 1, name: vm, disks: disks.map((path, i) => ({ id: `disk${i}`, path })), frequencyMs: 30_000, history: 0, appConsistentEveryMs: null,
      preSnapshot: null, postSnapshot: null, compression: 'zstd', initial: { mode: 'network' }, startAt: null, bandwidthBytesPerSec: null,
      paused: false, createdAt: new Date().toISOString(), ...settings,
    });
  }

  /**
   * One in-process pass of the engine over every VM; each must succeed (or be paused); returns the VMs run.
   * A request the service did not answer (a reset connection on this loaded machine) is retried twice
   * with a short backoff, as the daemon would, and said on stderr; anything else fails at once.
   */
  async runOnce(settings: Partial<EngineContext> = {}): Promise<VmCycleResult[]> {
    const retry = { attempts: 3, baseMs: 100, onRetry: (err: unknown, attempt: number) => console.warn(`e2e: retry ${attempt} after: ${userMessage(err) ?? String(err)}`) };
    const results = await new Replicator({ ...(await engineContext(this.state, silentLogger)), retry, ...settings }).runOnce();
    for (const r of results) expect(r, r.error).toMatchObject({ outcome: expect.stringMatching(/^(ok|skipped)$/) });
    return results.filter((r) => r.outcome === 'ok');
  }

  progress(vm: string): Promise<VmProgress> {
    return this.state.readProgress(vm);
  }

  /**
   * Runs `lifeboat-agent run --once` as a user does. A trigger (onFile, whenTrue, onCommit) is armed
   * with a function that SIGKILLs the run and resolves once it is gone; it returns its disarm.
   */
  async runAgent(trigger?: Trigger): Promise<AgentRun> {
    const started = performance.now();
    const child = spawn(process.execPath, [agentBin, 'run', '--once', '--state-dir', this.state.dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    let exited = false;
    let killed = false;
    const closed = new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('close', (code, signal) => { exited = true; r([code, signal]); }));
    const disarm = trigger?.(async () => {
      if (!exited && !killed) {
        killed = true;
        child.kill('SIGKILL');
      }
      await closed;
    });
    const [code, signal] = await closed;
    disarm?.();
    return { code, signal, killed, stdout, stderr, ms: performance.now() - started };
  }

  /**
   * Kills at the first commit the service records (a log's, or a base's completion), before the
   * service answers: the agent never hears that its commit was recorded.
   */
  onCommit(): Trigger {
    return (kill) => {
      const listener = async () => {
        this.commitListeners.delete(listener);
        await kill();
      };
      this.commitListeners.add(listener);
      return () => { this.commitListeners.delete(listener); };
    };
  }

  /** Merges what was committed, exports the latest point of a disk and compares it with the source. */
  async expectReplicaEqualsSource(vm: string, disk: string, source: string): Promise<void> {
    await this.merger.merge();
    const out = join(this.env.dir, `export-${vm}-${disk}-${randomBytes(4).toString('hex')}.raw`);
    const r = await operator(this.svc, 'POST', `/v1/tenants/acme/vms/${vm}/exports`, { disk, point: 'latest', format: 'raw', path: out });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', source, out]);
  }

  /** The keys of a VM's disk in the store. */
  async keys(vm: string, disk: string): Promise<string[]> {
    const store = await this.openStore();
    try {
      const keys: string[] = [];
      for await (const e of store.list(`tenants/acme/vms/${vm}/disks/${disk}/`)) keys.push(e.key);
      return keys.sort();
    } finally {
      await store.close();
    }
  }
}

/**
 * A describe over one store whose tests get the scenario through use(ctx). The scenario starts once
 * for the describe; a store that cannot start skips (or, when it must run, fails) every test.
 */
export function storeSuite(store: StoreCase, body: (use: (ctx: TestContext) => Scenario) => void): void {
  describe(`agent, service and merge worker on ${store.name}`, () => {
    let scenario: Scenario | undefined;
    let why = '';
    beforeAll(async () => {
      let emulator: Emulator | undefined;
      try {
        emulator = store.start ? await store.start(`e2e-${randomBytes(4).toString('hex')}`) : undefined;
      } catch (err) {
        why = `cannot start: ${(err as Error).message}`;
        if (store.mustRun) throw err;
        console.warn(`skipping the e2e suite on ${store.name}: ${why}`);
        return;
      }
      // Past the emulator, a failure is a failure.
      scenario = await Scenario.start(store, emulator);
    }, 120_000);
    afterAll(async () => {
      await scenario?.stop();
    });
    body((ctx) => {
      if (scenario) return scenario;
      if (store.mustRun) throw new Error(`${store.name} must run: ${why}`);
      return ctx.skip(why);
    });
  });
}

/** Arms a kill (SIGKILL, resolved once the process is gone); returns the disarm. */
export type Trigger = (kill: () => Promise<void>) => () => void;

/** Kills at the nth change of a file in dir whose name matches (fs.watch: sees short-lived files too). */
export function onFile(dir: string, pattern: RegExp, nth = 1): Trigger {
  return (kill) => {
    let seen = 0;
    mkdirSync(dir, { recursive: true });
    const watcher = watch(dir, (_event, name) => {
      if (name && pattern.test(name) && ++seen === nth) void kill();
    });
    return () => watcher.close();
  };
}

/** Kills the first time the condition holds, checked every 20 ms. */
export function whenTrue(condition: () => Promise<boolean>): Trigger {
  return (kill) => {
    let stopped = false;
    void (async () => {
      while (!stopped) {
        if (await condition().catch(() => false)) return void kill();
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    return () => { stopped = true; };
  };
}
