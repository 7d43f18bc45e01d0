/**
 * A failover host: the process that owns failed-over VMs and the NBD exports they read
 * (`lifeboat-service failover-host`; `serve` runs one inside it unless failover.embeddedHost is false).
 * Its VMs outlive it: qemu runs detached, and when the host restarts it listens on the same NBD socket
 * (qemu's NBD client reconnects within reconnect-delay) and finds its VMs again by their work
 * directories. It registers itself with its capacity (placement reads it), heartbeats, and runs:
 * - the failover queue of this host (job.ts), one job per failover;
 * - a monitor: a VM whose qemu died is marked failed with qemu's reason (then torn down); a test
 *   failover past its maximum duration is stopped with a report;
 * - a reconciler: a failover the catalog says has work left gets its job again (Redis may have lost it);
 *   each started VM's public addresses are as its tenant's mappings say (public-ips.ts).
 * What hosts share: the catalog, Redis and the replica storage (exports read replica layers from it, as
 * workers do); each host's own directory (overlays, seeds, sockets) is its own.
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { promisify } from 'node:util';
import { Worker } from 'bullmq';
import type { Logger } from 'pino';
import { ErrInvalidArgument, LifeboatError, userMessage } from '../../shared/errors.js';
import type { Config } from '../config/config.js';
import { HypervDriver } from './drivers/hyperv.js';
import { SshHypervRunner } from '../../shared/hyperv/runner.js';
import { WebhookDriver } from './drivers/webhook.js';
import { getFailover, heartbeatHost, listFailovers, setFailoverGoal, setFailoverState, upsertHost } from '../catalog/failovers.js';
import { addStep } from './steps.js';
import type { ServiceContext } from '../context.js';
import { connectRedis } from '../queue.js';
import { QemuDriver } from './drivers/qemu.js';
import type { FailoverDriver } from './drivers/types.js';
import { resolveExport } from './exports.js';
import type { HostRuntime } from './job.js';
import { nextStep, runFailoverJob, workDirOf } from './job.js';
import { NbdServer } from './nbd/server.js';
import { reconcilePublicIps } from './public-ips.js';
import type { FailoverQueues } from './queue.js';
import { createFailoverQueues, failoverQueueName } from './queue.js';

export interface HostOptions {
  /** Redis for the queue and locks (default: the config's). */
  redisUrl?: string | undefined;
  /** BullMQ and lock prefixes, for tests that share one Redis. */
  queuePrefix?: string | undefined;
  lockPrefix?: string | undefined;
  /** Replaces the qemu driver (tests of the engine with another real driver). */
  driver?: FailoverDriver | undefined;
  /** Monitor and reconciler period (default 5 s). */
  tickMs?: number | undefined;
  /** Other kinds of job this host's queue carries (recovery plan runs), each with its own reconciler. */
  extensions?: HostExtension[] | undefined;
}

/**
 * A kind of job carried by the host's failover queue beside failovers (by job name), and its part of
 * the reconciler: each round re-adds the jobs of its catalog rows that have work left and that this
 * process is not running (Redis may have lost them).
 */
export interface HostExtension {
  jobName: string;
  /** Runs one job; `running` holds the ids this process runs now (a job added again while one runs returns at once). */
  run(rt: HostRuntime, queues: FailoverQueues, id: string): Promise<void>;
  reconcile(rt: HostRuntime, queues: FailoverQueues, running: ReadonlySet<string>): Promise<void>;
  /** The host is stopping: running jobs should return soon (their rows say where they were; the next host resumes them). */
  stop?(): void;
}

export interface RunningHost {
  name: string;
  runtime: HostRuntime;
  queues: FailoverQueues;
  /** One monitor and reconciler round now (tests). */
  tick(): Promise<void>;
  /** Stops this process's part (queue worker, exports, timers); the VMs go on running. */
  stop(): Promise<void>;
}

/** Checks that qemu can be run here; one clear line when it cannot. */
export async function checkQemu(binary: string): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)(binary, ['--version'], { timeout: 10_000 });
    return stdout.split('\n')[0] ?? binary;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new LifeboatError('unavailable', code === 'ENOENT'
      ? `failover host: ${binary} is not installed (Debian: apt-get install qemu-system-x86 qemu-utils), so this host cannot run failovers`
      : `failover host: ${binary} --version failed (${(err as Error).message.split('\n')[0]})`, { cause: err });
  }
}

export async function startFailoverHost(ctx: ServiceContext, options: HostOptions = {}): Promise<RunningHost> {
  const cfg = ctx.config.failover;
  const name = cfg.host.name;
  const log = ctx.log.child({ failoverHost: name });
  if (!options.driver && cfg.host.driver === 'qemu') await checkQemu(cfg.qemu.binary);
  await mkdir(join(cfg.host.dir, 'vms'), { recursive: true, mode: 0o700 });
  const redis = await connectRedis(options.redisUrl ?? ctx.config.redis.url);
  const closers: (() => Promise<void>)[] = [async () => redis.disconnect()];
  const stop = async () => {
    for (const close of closers.reverse()) await close().catch((err: unknown) => log.error({ err }, 'failover host stop'));
  };
  try {
    const nbdSocket = join(cfg.host.dir, 'nbd.sock');
    await rm(nbdSocket, { force: true });
    const nbd = new NbdServer({ log, resolve: (exportName) => resolveExport(ctx.db, name, exportName) });
    await nbd.listenUnix(nbdSocket);
    closers.push(() => nbd.close());
    const driver = options.driver ?? await makeDriver(ctx.config, log);
    closers.push(async () => driver.close?.());
    const runtime: HostRuntime = {
      ctx, redis, hostName: name, dir: cfg.host.dir, nbdSocket, driver, log, lockPrefix: options.lockPrefix,
      dropExport: (exportName) => nbd.dropExport(exportName),
    };
    const queues = createFailoverQueues(redis, options.queuePrefix);
    closers.push(() => queues.close());
    await upsertHost(ctx.db, { name, cpus: cfg.host.cpus, memoryMiB: cfg.host.memoryMiB, storageBytes: cfg.host.storageBytes, networks: Object.keys(cfg.host.networks), pid: process.pid });
    const bullConnection = await connectRedis(options.redisUrl ?? ctx.config.redis.url);
    closers.push(async () => bullConnection.disconnect());
    const running = new Set<string>();
    const extensions = new Map((options.extensions ?? []).map((e) => [e.jobName, e]));
    const extRunning = new Set<string>();
    const worker = new Worker(failoverQueueName(name), async (job) => {
      const id = (job.data as { id: string }).id;
      const ext = extensions.get(job.name);
      if (ext) return exclusive(extRunning, id, () => ext.run(runtime, queues, id));
      return exclusive(running, id, () => runFailoverJob(runtime, id));
    }, {
      connection: bullConnection, concurrency: 32, lockDuration: 60_000, ...(options.queuePrefix ? { prefix: options.queuePrefix } : {}),
    });
    worker.on('error', (err) => log.error({ err }, 'failover worker'));
    closers.push(() => worker.close());
    // Run before the worker's close, which waits for the jobs running now.
    closers.push(async () => { for (const ext of extensions.values()) ext.stop?.(); });
    await worker.waitUntilReady();
    const tick = async () => {
      await heartbeatHost(ctx.db, name);
      await monitor(runtime, queues);
      await reconcile(runtime, queues, running);
      await reconcilePublicIps(runtime);
      for (const ext of extensions.values()) await ext.reconcile(runtime, queues, extRunning);
    };
    const tickMs = options.tickMs ?? 5000;
    let ticking = false;
    const timer = setInterval(() => {
      if (ticking) return;
      ticking = true;
      tick().catch((err: unknown) => log.error({ err }, 'failover host tick')).finally(() => { ticking = false; });
    }, tickMs);
    closers.push(async () => clearInterval(timer));
    await reconcile(runtime, queues, running);
    for (const ext of extensions.values()) await ext.reconcile(runtime, queues, extRunning);
    log.info({ host: name, nbdSocket }, 'failover host started');
    return { name, runtime, queues, tick, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The driver the config names for this host; a missing section or file is one clear line. */
export async function makeDriver(config: Config, log: Logger): Promise<FailoverDriver> {
  const cfg = config.failover;
  const absolute = (field: string, p: string | undefined) => {
    if (p !== undefined && !isAbsolute(p)) throw ErrInvalidArgument(`${config.path}: failover.${field}: ${p} must be an absolute path`);
    return p;
  };
  const secret = async (field: string, file: string | undefined) => {
    if (file === undefined) return undefined;
    try {
      return (await readFile(absolute(field, file)!, 'utf8')).trim();
    } catch (err) {
      throw ErrInvalidArgument(`${config.path}: failover.${field}: ${userMessage(err) ?? (err as Error).message}`);
    }
  };
  switch (cfg.host.driver) {
    case 'qemu':
      return new QemuDriver({
        binary: cfg.qemu.binary, imgBinary: cfg.qemu.img, accel: cfg.qemu.accel, reconnectDelaySec: cfg.qemu.reconnectDelaySeconds,
        stateDir: cfg.host.dir, log,
      });
    case 'hyperv': {
      const h = cfg.hyperv;
      if (!h) throw ErrInvalidArgument(`${config.path}: failover.hyperv: required when failover.host.driver is hyperv`);
      const runner = new SshHypervRunner({
        host: h.host, user: h.user, ...(h.port ? { port: h.port } : {}),
        ...(h.identityFile ? { identityFile: absolute('hyperv.identityFile', h.identityFile)! } : {}),
        ...(h.knownHostsFile ? { knownHostsFile: absolute('hyperv.knownHostsFile', h.knownHostsFile)! } : {}),
      });
      return new HypervDriver({ runner, childDir: absolute('hyperv.childDir', h.childDir)!, paths: h.paths, switches: h.switches, ...(h.vmPath ? { vmPath: h.vmPath } : {}), ...(h.nat ? { nat: h.nat } : {}), log });
    }
    case 'webhook': {
      const w = cfg.webhook;
      if (!w) throw ErrInvalidArgument(`${config.path}: failover.webhook: required when failover.host.driver is webhook`);
      const callbackSecret = await secret('webhook.callbackSecretFile', w.callbackSecretFile);
      const ca = await secret('webhook.caFile', w.caFile);
      return new WebhookDriver({
        url: w.url, secret: (await secret('webhook.secretFile', w.secretFile))!, callbackUrl: w.callbackUrl,
        ...(callbackSecret ? { callbackSecret } : {}), ...(ca ? { ca } : {}), log,
      });
    }
  }
}

/** Marks dead VMs failed, stops expired test failovers. */
async function monitor(rt: HostRuntime, queues: FailoverQueues): Promise<void> {
  for (const f of await listFailovers(rt.ctx.db, { host: rt.hostName, active: true })) {
    if (f.kind === 'test' && f.expiresAt && new Date(f.expiresAt).getTime() <= Date.now() && f.goal === 'ready') {
      await rt.ctx.db.transaction(async (tx) => {
        await setFailoverGoal(tx, f.id, 'stopped');
        const hours = Math.round((new Date(f.expiresAt!).getTime() - new Date(f.requestedAt).getTime()) / 36_000) / 100;
        await addStep(tx, f.id, 'stop requested', 'done', `the test failover reached its maximum duration (${hours} h)`, 'expiry');
      });
      await queues.enqueue(f);
      continue;
    }
    if (!['ready', 'running', 'committed'].includes(f.state)) continue;
    const status = await rt.driver.status(workDirOf(rt, f.id));
    if (status.state === 'failed' || status.state === 'stopped') {
      const again = await getFailover(rt.ctx.db, f.id);
      if (!again || again.state !== f.state || again.endedAt) continue;
      const reason = `the VM ${status.state === 'failed' ? 'died' : 'stopped'}: ${status.reason ?? 'qemu is not running'}`;
      await rt.ctx.db.transaction(async (tx) => {
        await addStep(tx, f.id, 'monitor', 'failed', reason);
        await setFailoverState(tx, f.id, 'failed', { error: reason });
      });
      await queues.enqueue(f);
    }
  }
}

/**
 * Runs a job (a failover's, a plan run's) unless this process is running it already. Once Redis lost
 * its jobs (a restart without persistence), a job added again (by a stop request or the reconciler)
 * can find the first run still going; that run reads the goal before every step, so the second has
 * nothing to do.
 */
async function exclusive(running: Set<string>, id: string, run: () => Promise<void>): Promise<void> {
  if (running.has(id)) return;
  running.add(id);
  try {
    await run();
  } finally {
    running.delete(id);
  }
}

/**
 * Re-creates the job of every failover on this host that has work left and that this process is not
 * running now (Redis may have lost it; a job that is still there is not added twice).
 */
async function reconcile(rt: HostRuntime, queues: FailoverQueues, running: ReadonlySet<string>): Promise<void> {
  for (const f of await listFailovers(rt.ctx.db, { host: rt.hostName, active: true })) {
    if (!running.has(f.id) && nextStep(f)) await queues.enqueue(f);
  }
}
