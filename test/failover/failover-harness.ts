/**
 * The failover engine's whole path for tests: the service (real PostgreSQL catalog in a fresh schema,
 * a Redis database of its own, VHDX replicas) with its embedded failover host (our NBD server, the
 * real qemu driver) or, with externalHost, a `lifeboat-service failover-host` process of its own; a
 * tenant, an agent enrolled by its own code and run in-process, merges by Merger (no timers).
 * `restart()` stops the service process's part (API, host, exports) and starts it again on the same
 * data: the VMs it started keep running.
 */
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Redis } from 'ioredis';
import pino from 'pino';
import { enroll } from '../../agent/enroll/enroll.js';
import { silentLogger } from '../../agent/replicate/context.js';
import type { VmCycleResult } from '../../agent/replicate/engine.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { engineContext } from '../../agent/replicate/from-state.js';
import type { VmConfig } from '../../agent/state/schema.js';
import { AgentState } from '../../agent/state/store.js';
import type { FailoverReport } from '../../service/failover/report.js';
import type { RunningService } from '../../service/runner.js';
import { startService } from '../../service/runner.js';
import { signApiToken } from '../../service/trust/tokens.js';
import { Merger } from '../../service/workers/merger.js';
import { GuestAgentClient } from '../../shared/qmp/client.js';
import type { HttpResult, TestEnv } from '../service/helpers.js';
import { claimRedisDb, operator, testEnv } from '../service/helpers.js';
import { killLeftQemus } from './qemu-helpers.js';

const serviceBin = join(import.meta.dirname, '..', '..', 'bin', 'lifeboat-service.js');

export class FailoverScenario {
  private constructor(
    readonly env: TestEnv,
    public svc: RunningService,
    public merger: Merger,
    readonly state: AgentState,
    readonly hostDir: string,
    readonly redis: Redis,
    private readonly redisDb: { url: string; drop(): Promise<void> },
    private readonly options: { externalHost: boolean },
  ) {}

  /** The failover-host processes this scenario started (stop ends any still running). */
  private readonly hostProcesses: ChildProcess[] = [];

  static async start(options: { tenant?: string; externalHost?: boolean; configure?: (failover: Record<string, unknown>) => void } = {}): Promise<FailoverScenario> {
    const tenant = options.tenant ?? 'acme';
    // A short directory: qemu's and the NBD server's unix sockets live under it (108-byte limit).
    const hostDir = await mkdtemp(join(tmpdir(), 'lbfo-'));
    const hostName = `t${randomBytes(4).toString('hex')}`;
    const redisDb = await claimRedisDb();
    const env = await testEnv((c) => {
      c.replicaFormat = 'vhdx';
      c.redis = { url: redisDb.url };
      c.failover = { host: { name: hostName, dir: hostDir, cpus: 32, memoryMiB: 32768 }, readyTimeoutSeconds: 900 };
      options.configure?.(c.failover as Record<string, unknown>);
    });
    const redis = new Redis(redisDb.url, { maxRetriesPerRequest: null });
    const opts = { externalHost: options.externalHost ?? false };
    const svc = await FailoverScenario.startSvc(env, opts);
    const merger = new Merger(svc.ctx, redis);
    must(await operator(svc, 'POST', '/v1/tenants', { name: tenant }), 'create tenant');
    must(await operator(svc, 'POST', `/v1/tenants/${tenant}/authorizations`, { pattern: `*.${tenant}.test` }), 'allow');
    const token = (await operator<{ token: string }>(svc, 'POST', `/v1/tenants/${tenant}/tokens`, {})).body.token;
    const state = new AgentState(join(env.dir, 'agent'));
    await enroll(state, { serviceUrl: svc.agentUrl, token, serverName: `hv01.${tenant}.test` });
    return new FailoverScenario(env, svc, merger, state, hostDir, redis, redisDb, opts);
  }

  private static startSvc(env: TestEnv, options: { externalHost: boolean }): Promise<RunningService> {
    return startService(env.config, {
      apiPort: 0, workers: false, log: pino({ level: process.env.LIFEBOAT_TEST_LOG ?? 'silent' }), enqueue: async () => undefined,
      failoverHost: !options.externalHost, failoverApi: true,
    });
  }

  /** Stops this process's service (and its failover host) and starts them again; VMs keep running. */
  async restart(): Promise<void> {
    await this.svc.stop();
    this.svc = await FailoverScenario.startSvc(this.env, this.options);
    this.merger = new Merger(this.svc.ctx, this.redis);
  }

  /** Starts `lifeboat-service failover-host` on this scenario's config; resolves once it says ready. */
  startHostProcess(): Promise<ChildProcess> {
    const child = spawn(process.execPath, [serviceBin, 'failover-host', '--config', this.env.config.path], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.hostProcesses.push(child);
    let err = '';
    child.stderr!.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-4000); });
    return new Promise((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('failover-host ready')) resolve(child); });
      child.once('exit', (code) => reject(new Error(`failover-host exited ${code}: ${err}`)));
    });
  }

  async stop(): Promise<void> {
    // A test that failed half-way leaves its host processes and their detached guests: end them, or
    // they take the CPU of every test after (a guest outlives its host by design).
    for (const child of this.hostProcesses) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await killLeftQemus(join(this.hostDir, 'vms')).catch(() => undefined);
    this.redis.disconnect();
    await this.svc.stop();
    await this.env.cleanup();
    await this.redisDb.drop();
    await rm(this.hostDir, { recursive: true, force: true });
  }

  async protect(vm: string, disks: string[], settings: Partial<VmConfig> = {}): Promise<void> {
    await this.state.writeConfig({
      version: 1, name: vm, disks: disks.map((path, i) => ({ id: `disk${i}`, path })), frequencyMs: 30_000, history: 24, appConsistentEveryMs: null,
      preSnapshot: null, postSnapshot: null, compression: 'zstd', initial: { mode: 'network' }, startAt: null, bandwidthBytesPerSec: null,
      paused: false, createdAt: new Date().toISOString(), ...settings,
    });
  }

  /** One agent cycle over every VM, then every merge it made due; the agent's results. */
  async replicate(): Promise<VmCycleResult[]> {
    const results = await new Replicator({ ...(await engineContext(this.state, silentLogger)) }).runOnce();
    for (const r of results) if (r.outcome === 'failed') throw new Error(`agent cycle of ${r.vm}: ${r.outcome} ${r.error ?? ''}`);
    while ((await this.merger.merge()) > 0) { /* until nothing is pending */ }
    return results;
  }

  /** Runs fn while merging whatever the agent daemon ships (every 300 ms): a planned failover's final cycle. */
  async whileMerging<T>(fn: () => Promise<T>): Promise<T> {
    let pumping = true;
    const pump = (async () => {
      while (pumping) {
        while ((await this.merger.merge()) > 0) { /* the final cycle's logs */ }
        await new Promise((res) => setTimeout(res, 300));
      }
    })();
    try {
      return await fn();
    } finally {
      pumping = false;
      await pump;
    }
  }

  api<T = FailoverReport>(method: string, path: string, body?: unknown, token?: string): Promise<HttpResult<T>> {
    return operator<T>(this.svc, method, path, body, token);
  }

  /**
   * A config file for the CLI beside the service's: the CLI finds the service by the config's
   * api.port, and the test service listens on a port of its own.
   */
  async cliConfig(): Promise<string> {
    const file = JSON.parse(await readFile(this.env.config.path, 'utf8')) as { api: { port: number } };
    file.api.port = Number(new URL(this.svc.apiUrl).port);
    const path = join(dirname(this.env.config.path), 'cli.json');
    await writeFile(path, JSON.stringify(file));
    return path;
  }

  /** A token of a tenant role. */
  tenantToken(role: 'tenant-admin' | 'tenant-viewer', tenant: string): Promise<string> {
    return signApiToken(this.svc.ctx.signer, { role, tenant, sub: `${role}@${tenant}` }, 3600);
  }

  /** Polls the report until pred holds (or the failover ended otherwise); returns the last report. */
  async waitFor(id: string, pred: (r: FailoverReport) => boolean, timeoutMs: number): Promise<FailoverReport> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = must(await this.api('GET', `/v1/failovers/${id}`), `failover ${id}`);
      if (pred(r.body)) return r.body;
      if (r.body.endedAt !== null) throw new Error(`failover ${id} ended as ${r.body.state} (${r.body.error ?? 'no error'}): ${JSON.stringify(r.body.steps)}`);
      if (Date.now() > deadline) throw new Error(`failover ${id} still ${r.body.state} after ${timeoutMs} ms: ${JSON.stringify(r.body.steps)}`);
      await new Promise((res) => setTimeout(res, 1000));
    }
  }

  workDir(id: string): string {
    return join(this.hostDir, 'vms', id);
  }
}

/** The result of a call that must succeed (2xx), else an error with its body. */
export function must<T>(r: HttpResult<T>, what: string): HttpResult<T> {
  if (r.status >= 300) throw new Error(`${what}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r;
}

/** Whether qemu-system-x86_64 runs here; the failover tests skip (saying why) only where it does not. */
export function qemuAvailable(what: string): boolean {
  try {
    execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    console.warn(`skipping ${what}: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)`);
    return false;
  }
}

/** Asks a failed-over guest through its agent (qga.sock in its work directory), retrying while it starts. */
export async function withGuestAgent<T>(workDir: string, fn: (ga: GuestAgentClient) => Promise<T>): Promise<T> {
  let last: unknown;
  for (let i = 0; i < 30; i++) {
    try {
      const ga = await GuestAgentClient.connect(join(workDir, 'qga.sock'), { timeoutMs: 5000 });
      try {
        return await fn(ga);
      } finally {
        ga.close();
      }
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  throw last;
}
