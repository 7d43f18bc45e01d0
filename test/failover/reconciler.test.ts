/**
 * Redis loses everything (FLUSHDB of the scenario's own database) in the middle of a failover, and the
 * failover host's reconciler carries it on from the catalog. The VM's disk holds nothing bootable and
 * its readiness probe is a console line never printed, so each failover stays in wait-ready with qemu
 * running until it is stopped: what is checked is the engine, not a guest.
 * - After prepare, before qemu: the host (its own process, `lifeboat-service failover-host`) holds the
 *   VM's launch at a gate (qemu.binary is a script that waits for a file), is SIGKILLed there, Redis is
 *   wiped, and a host started again finds no job in Redis; its reconciler re-creates it and qemu starts.
 * - Running, the host died too: the host process is SIGKILLed under a running qemu, Redis is wiped; the
 *   next host's reconciler re-creates the job, which finds the same qemu running.
 * - Running, the host alive: Redis is wiped under the job that is waiting for ready; the reconciler adds
 *   no second run of it, and a stop (whose job Redis no longer dedupes) is done once, by the first run.
 * Each ends with a stop that leaves nothing: no qemu, no work directory (overlays, seeds), no export, no pin.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isOurQemu } from '../../service/failover/drivers/qemu-files.js';
import { exportName } from '../../service/failover/exports.js';
import type { RunningHost } from '../../service/failover/host.js';
import { startFailoverHost } from '../../service/failover/host.js';
import { failoverJobId, failoverQueueName } from '../../service/failover/queue.js';
import type { FailoverReport } from '../../service/failover/report.js';
import * as P from '../../shared/nbd/protocol.js';
import { referee } from '../helpers.js';
import { FailoverScenario, must, qemuAvailable } from './failover-harness.js';
import { RawNbd } from './nbd-client.js';

const hasQemu = qemuAvailable('the reconciler tests');
const MinuteMs = 60_000;

describe.skipIf(!hasQemu)('failover reconciler after Redis lost everything', () => {
  let s: FailoverScenario;
  let gate: string;
  let hostName: string;
  let redis: Redis;
  let queue: Queue;
  const children: ChildProcess[] = [];
  let host: RunningHost | undefined;

  /** A step's rows: a step is one row, started and then marked done (or failed) in place. */
  const count = (r: FailoverReport, step: string, status?: string) => r.steps.filter((x) => x.step === step && (status === undefined || x.status === status)).length;
  const report = async (id: string) => must(await s.api('GET', `/v1/failovers/${id}`), 'report').body;
  const jobState = (id: string) => queue.getJobState(failoverJobId(id));
  const qemuPid = async (id: string) => Number((await readFile(join(s.workDir(id), 'qemu.pid'), 'utf8')).trim());
  const alive = (pid: number, id: string) => isOurQemu(pid, join(s.workDir(id), 'qmp.sock'));

  /** FLUSHDB of the scenario's Redis database; the harness's claim on it is put back in the same step. */
  const wipeRedis = async () => {
    const claim = await redis.get('lifeboat-claim');
    await redis.multi().flushdb().set('lifeboat-claim', claim ?? 'reconciler-test', 'EX', 6 * 3600).exec();
    expect(await redis.dbsize()).toBe(1);
  };
  const killHostProcess = async (child: ChildProcess) => {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  };
  /** The failover host in this process (one at a time: a second of one name would share its queue). */
  const startHost = async () => {
    await stopHost();
    host = await startFailoverHost(s.svc.ctx);
    return host;
  };
  const stopHost = async () => {
    await host?.stop();
    host = undefined;
  };
  /** Whether the host's NBD socket serves the failover's export (false: refused at the handshake). */
  const served = async (r: FailoverReport) => {
    const c = await RawNbd.connect(join(s.hostDir, 'nbd.sock'));
    try {
      const replies = await c.handshake(exportName({ tenant: 'acme', vm: 'blank', id: r.id }, r.point.id!, 'disk0'));
      return replies.at(-1)!.type === P.NBD_REP_ACK;
    } finally {
      c.close();
    }
  };
  const request = async () => must(await s.api('POST', '/v1/tenants/acme/vms/blank/failovers', { kind: 'test', point: 'latest' }), 'test failover').body.id;
  /** Stops the failover through the API and checks that nothing of it is left. */
  const stopAndCheck = async (id: string, pid: number) => {
    const running = await report(id);
    expect(await served(running)).toBe(true);
    must(await s.api('POST', `/v1/failovers/${id}/stop`, {}), 'stop');
    const ended = await s.waitFor(id, (r) => r.endedAt !== null, 3 * MinuteMs);
    expect(ended.state).toBe('stopped');
    expect(ended.error).toBeNull();
    expect(count(ended, 'stop')).toBe(1);
    expect(count(ended, 'stop', 'done')).toBe(1);
    expect(await alive(pid, id)).toBe(false);
    expect(existsSync(s.workDir(id))).toBe(false);
    expect(await served(ended)).toBe(false);
    expect(await s.svc.ctx.db.query('SELECT * FROM point_pins')).toEqual([]);
    return ended;
  };

  beforeAll(async () => {
    gate = await mkdtemp(join(tmpdir(), 'lbgate-'));
    // qemu.binary: holds a VM's launch (its arguments name qmp.sock) until <gate>/open exists, writing
    // its pid to <gate>/held meanwhile; the version and accelerator probes go straight through.
    const script = join(gate, 'qemu');
    await writeFile(script, `#!/bin/sh
case "$*" in
  *qmp.sock*)
    if [ ! -e '${gate}/open' ]; then
      echo $$ > '${gate}/held'
      while [ ! -e '${gate}/open' ]; do sleep 0.1; done
    fi ;;
esac
exec qemu-system-x86_64 "$@"
`);
    await chmod(script, 0o755);
    s = await FailoverScenario.start({ externalHost: true, configure: (f) => { f.qemu = { binary: script }; } });
    hostName = s.svc.ctx.config.failover.host.name;
    redis = new Redis(s.env.config.redis.url, { maxRetriesPerRequest: null });
    queue = new Queue(failoverQueueName(hostName), { connection: redis });
    const disk = join(s.env.dir, 'blank.vhdx');
    await referee('qemu-img', ['create', '-q', '-f', 'vhdx', disk, '16M']);
    await referee('qemu-io', ['-c', 'write -P 0x5a 0 1M', disk]);
    await s.protect('blank', [disk]);
    await s.replicate();
    must(await s.api('PUT', '/v1/tenants/acme/vms/blank/hardware', { firmware: 'bios', cpus: 1, memoryMiB: 128, guestOs: 'other', readyProbes: [{ kind: 'console', pattern: 'never-printed' }] }), 'hardware');
  }, 5 * MinuteMs);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) await killHostProcess(c);
    await Promise.race([stopHost(), new Promise((r) => setTimeout(r, 30_000))]);
    // Whatever a failed test left running.
    for (const id of await readdir(join(s.hostDir, 'vms')).catch(() => [])) {
      const pid = await qemuPid(id).catch(() => 0);
      if (pid > 0 && (await alive(pid, id))) process.kill(pid, 'SIGKILL');
    }
    await queue?.close();
    redis?.disconnect();
    await s?.stop();
    await rm(gate, { recursive: true, force: true });
  }, 5 * MinuteMs);

  it('after prepare, before qemu: the restarted host re-creates the lost job and the VM starts', async () => {
    const first = await s.startHostProcess();
    children.push(first);
    const id = await request();
    // The launch is held at the gate: prepare done, the start step begun, no qemu yet.
    const held = await s.waitFor(id, (r) => count(r, 'start', 'started') === 1, 3 * MinuteMs);
    let gatePid = 0;
    for (let i = 0; i < 600 && !gatePid; i++) {
      gatePid = Number((await readFile(join(gate, 'held'), 'utf8').catch(() => '')).trim()) || 0;
      if (!gatePid) await new Promise((r) => setTimeout(r, 100));
    }
    expect(gatePid).toBeGreaterThan(0);
    expect(held.state).toBe('booting');
    expect(count(held, 'prepare', 'done')).toBe(1);
    expect(await jobState(id)).toBe('active');
    await killHostProcess(first);
    process.kill(gatePid, 'SIGKILL');
    await wipeRedis();
    expect(await jobState(id)).toBe('unknown');

    await writeFile(join(gate, 'open'), '');
    const h = await startHost();
    // Nothing but the reconciler (run as the host starts) could have put the job back.
    expect(['waiting', 'active']).toContain(await jobState(id));
    // The held start (its row left open) and the reconciled one, done.
    const started = await s.waitFor(id, (r) => count(r, 'start', 'done') === 1 && count(r, 'wait-ready', 'started') === 1, 3 * MinuteMs);
    expect(count(started, 'start')).toBe(2);
    expect(started.state).toBe('booting');
    expect(count(started, 'prepare', 'done')).toBe(1);
    expect((await h.runtime.driver.status(s.workDir(id))).state).toBe('running');
    const pid = await qemuPid(id);
    expect(pid).not.toBe(gatePid);
    await stopAndCheck(id, pid);
    await stopHost();
  }, 10 * MinuteMs);

  it('running, the host died too: the next host re-creates the job, which finds the same qemu running', async () => {
    const first = await s.startHostProcess();
    children.push(first);
    const id = await request();
    await s.waitFor(id, (r) => count(r, 'start', 'done') === 1 && count(r, 'wait-ready', 'started') === 1, 3 * MinuteMs);
    const pid = await qemuPid(id);
    expect(await alive(pid, id)).toBe(true);
    await killHostProcess(first);
    await wipeRedis();
    expect(await jobState(id)).toBe('unknown');

    const h = await startHost();
    expect(['waiting', 'active']).toContain(await jobState(id));
    const again = await s.waitFor(id, (r) => count(r, 'start', 'done') === 2 && count(r, 'wait-ready', 'started') === 2, 3 * MinuteMs);
    expect(again.state).toBe('booting');
    expect(await qemuPid(id)).toBe(pid);
    expect((await h.runtime.driver.status(s.workDir(id))).state).toBe('running');
    await stopAndCheck(id, pid);
  }, 10 * MinuteMs);

  it('running, the host alive: no second run of the job, and a stop is done once', async () => {
    const h = host ?? (await startHost());
    const id = await request();
    await s.waitFor(id, (r) => count(r, 'start', 'done') === 1 && count(r, 'wait-ready', 'started') === 1, 3 * MinuteMs);
    const pid = await qemuPid(id);
    await wipeRedis();
    await h.tick();
    // The host is running the job (waiting for ready): the reconciler leaves it alone.
    expect(await jobState(id)).toBe('unknown');
    const after = await report(id);
    expect(count(after, 'start')).toBe(1);
    expect(count(after, 'wait-ready')).toBe(1);
    expect(after.state).toBe('booting');
    expect((await h.runtime.driver.status(s.workDir(id))).state).toBe('running');
    await stopAndCheck(id, pid);
    await stopHost();
  }, 10 * MinuteMs);
});
