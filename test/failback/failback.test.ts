/**
 * The failback request end to end with real parts: the service (PostgreSQL catalog, Redis, VHDX
 * replicas), failover hosts as processes of their own (`lifeboat-service failover-host`, the qemu
 * driver under TCG), the agent daemon (`lifeboat-agent run`: planned failover, then the failback
 * commands) on a raw disk. A planned failover is committed; the VM writes at the hoster (qemu-io
 * through its monitor); the failback is asked through the API and the failover host running it is
 * killed once its final reverse cycle is stored; a new host resumes it, the agent applies and
 * confirms equality, and the VM's start hook fails: the VM is given back to the hoster. Asked again
 * with a working hook, the failback runs to the end: the hoster VM goes, its disk becomes the replica
 * and forward replication resumes with a delta base. qemu-img compare is the referee: the on-premises disk against the hoster's disk
 * (the adopted replica layer), then against the replica after the next cycle.
 * The VM boots nothing: its ready probe is a TCP port this test listens on.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerNewEnvelopeKey } from '../../agent/reverse/keys.js';
import { listDisks } from '../../service/catalog/vms.js';
import { QemuDriver } from '../../service/failover/drivers/qemu.js';
import type { FailbackReport } from '../../service/failback/report.js';
import { FailbackReason } from '../../service/failback/adopt.js';
import { readState } from '../../service/replication/replica.js';
import { referee, runBin } from '../helpers.js';
import { FailoverScenario, must, qemuAvailable } from '../failover/failover-harness.js';

const hasQemu = qemuAvailable('the failback test');
const MiB = 1 << 20;
const DiskMiB = 64;
const MinuteMs = 60_000;
const agentBin = join(import.meta.dirname, '..', '..', 'bin', 'lifeboat-agent.js');

let s: FailoverScenario;
let source: string;
let probe: Server;
let daemon: ChildProcess | undefined;
const hosts: ChildProcess[] = [];

async function write(image: string, fmt: string, at: number[], len: number, p: number): Promise<void> {
  await referee('qemu-io', ['-f', fmt, ...at.flatMap((o) => ['-c', `write -P ${p} ${o * MiB} ${len * MiB}`]), image]);
}

async function startHost(env: Record<string, string> = {}): Promise<ChildProcess> {
  const before = { ...process.env };
  Object.assign(process.env, env);
  try {
    const child = await s.startHostProcess();
    hosts.push(child);
    return child;
  } finally {
    for (const k of Object.keys(env)) if (before[k] === undefined) delete process.env[k];
  }
}

beforeAll(async () => {
  if (!hasQemu) return;
  s = await FailoverScenario.start({ externalHost: true });
  probe = createServer((c) => c.end()).listen(0, '127.0.0.1');
  await new Promise((r) => probe.once('listening', r));
  source = join(s.env.dir, 'web1.raw');
  await referee('qemu-img', ['create', '-q', '-f', 'raw', source, `${DiskMiB}M`]);
  await write(source, 'raw', [0, 8, 16, 24, 32, 40, 48, 56], 4, 0x11);
}, 180_000);

afterAll(async () => {
  probe?.close();
  daemon?.kill('SIGKILL');
  for (const h of hosts) if (h.exitCode === null && h.signalCode === null) h.kill('SIGKILL');
  await s?.stop();
}, 180_000);

describe.skipIf(!hasQemu)('failback (skipped only when qemu-system-x86_64 is missing)', () => {
  it('planned failover, writes at the hoster, a failback killed and resumed then given back by a failing start hook, a second to the end: equal disks, forward replication resumes with a delta', async () => {
    await s.protect('web1', [source]);
    const first = await s.replicate();
    expect(first[0]!.baseBytes).toBe(DiskMiB * MiB);
    await registerNewEnvelopeKey(s.state.dir, await s.state.readIdentity());
    const port = (probe.address() as { port: number }).port;
    must(await s.api('PUT', '/v1/tenants/acme/vms/web1/hardware', { firmware: 'bios', cpus: 1, memoryMiB: 64, guestOs: 'other', disks: { disk0: { bus: 'ide', order: 0 } }, readyProbes: [{ kind: 'tcp', host: '127.0.0.1', port }] }), 'hardware');

    // Planned failover through the agent daemon (final cycle), on a host process; then commit.
    let host = await startHost();
    daemon = spawn(process.execPath, [agentBin, 'run', '--state-dir', s.state.dir], { stdio: ['ignore', 'ignore', 'inherit'] });
    const id = await s.whileMerging(async () => {
      const r = await s.api('POST', '/v1/tenants/acme/vms/web1/failovers', { kind: 'planned' });
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      await s.waitFor(r.body.id, (x) => x.state === 'running', 20 * MinuteMs);
      return r.body.id;
    });
    // No forward cycle of the agent from here on: the delta base after failback is measured below.
    await s.state.writeConfig({ ...(await s.state.readConfig('web1')), paused: true });
    must(await s.api('POST', `/v1/failovers/${id}/commit`, {}), 'commit');
    await s.waitFor(id, (x) => x.state === 'committed', 10 * MinuteMs);

    // The VM writes at the hoster: qemu-io through its monitor (the host process holds the monitor, so
    // it goes first). The disk is on IDE: qemu-io -d names a device with a drive, which ide-hd is.
    host.kill('SIGKILL');
    await new Promise((r) => host.once('exit', r));
    const driver = new QemuDriver({ stateDir: join(s.hostDir, 'test') });
    const hmp = async (cmd: string) => {
      const out = await (await driver.qmp(s.workDir(id))).hmp(`qemu-io -d disk0 "${cmd}"`);
      // qemu-io prints its results on qemu's stdout; the monitor answers only an error.
      expect(out.trim(), cmd).toBe('');
    };
    await hmp(`write -P 0x5a ${2 * MiB} ${MiB}`);
    await hmp(`write -P 0x5b ${20 * MiB} 200k`);
    await hmp(`write -z ${61 * MiB} ${MiB}`);
    await hmp('flush');
    await driver.close();

    // Access: another tenant's operator gets 404, a viewer of this tenant 403, for both routes.
    for (const method of ['POST', 'GET']) {
      const other = await s.api<{ detail: string }>(method, `/v1/failovers/${id}/failback`, method === 'POST' ? {} : undefined, await s.tenantToken('tenant-admin', 'globex'));
      expect(other.status, `${method} another tenant`).toBe(404);
    }
    const viewer = await s.api<{ reason: string }>('POST', `/v1/failovers/${id}/failback`, {}, await s.tenantToken('tenant-viewer', 'acme'));
    expect(viewer.status).toBe(403);
    expect((await s.api('GET', `/v1/failovers/${id}/failback`, undefined, await s.tenantToken('tenant-viewer', 'acme'))).status).toBe(404);

    // The first failback, by this tenant's admin: the host running it is killed once its final cycle
    // is stored, and the VM's start hook fails, so the VM is given back to the hoster.
    const started = join(s.env.dir, 'started-at-home');
    await s.state.writeConfig({ ...(await s.state.readConfig('web1')), startHook: 'echo not today >&2; exit 3' });
    host = await startHost({ LIFEBOAT_TEST_FAILBACK_KILL: 'final-cycle' });
    const asked = await s.api<FailbackReport>('POST', `/v1/failovers/${id}/failback`, { shutdownTimeoutSeconds: 2 }, await s.tenantToken('tenant-admin', 'acme'));
    expect(asked.status, JSON.stringify(asked.body)).toBe(202);
    const again = await s.api<FailbackReport>('POST', `/v1/failovers/${id}/failback`, {});
    expect(again.status).toBe(200);
    expect(again.body.id).toBe(asked.body.id);
    await new Promise((r) => host.once('exit', r));
    const atKill = must(await s.api<FailbackReport>('GET', `/v1/failovers/${id}/failback`), 'report').body;
    expect(atKill.state).toBe('final-cycle');
    const logsAtKill = await s.svc.ctx.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM reverse_logs WHERE tenant = 'acme' AND vm = 'web1'`);
    expect(logsAtKill[0]!.n).toBeGreaterThan(0);

    host = await startHost();
    const ended = async (): Promise<FailbackReport> => {
      for (const deadline = Date.now() + 20 * MinuteMs; ;) {
        const r = must(await s.api<FailbackReport>('GET', `/v1/failovers/${id}/failback`), 'report').body;
        if (r.endedAt !== null) return r;
        if (Date.now() > deadline) throw new Error(`failback still ${r.state}: ${JSON.stringify(r.steps)}`);
        await new Promise((res) => setTimeout(res, 1000));
      }
    };
    const refused = await ended();
    expect(refused.id).toBe(asked.body.id);
    expect(refused.result, JSON.stringify(refused)).toBe('failed');
    expect(refused.error).toMatch(/starting: .*start hook failed: .*exited 3: not today/);
    expect(refused.steps.filter((x) => x.step === 'final-cycle').map((x) => x.status)).toEqual(['started', 'done']);
    expect(refused.steps.at(-1)).toMatchObject({ step: 'failed', detail: 'the VM runs at the hoster again' });
    expect(must(await s.api(`GET`, `/v1/failovers/${id}`), 'failover').body.state).toBe('committed');
    const pid = Number((await readFile(join(s.workDir(id), 'qemu.pid'), 'utf8')).trim());
    expect(() => process.kill(pid, 0)).not.toThrow();

    // Asked again with a start hook that works: it runs to the end.
    await s.state.writeConfig({ ...(await s.state.readConfig('web1')), startHook: `touch ${started}` });
    expect((await s.api('POST', `/v1/failovers/${id}/failback`, { shutdownTimeoutSeconds: 2 })).status).toBe(202);
    const report = await ended();
    expect(report.result, JSON.stringify(report)).toBe('done');
    expect(report.id).not.toBe(refused.id);
    console.log(`failback report: ${JSON.stringify({ window: report.windowSeconds, steps: report.steps.map((x) => [x.step, x.status, x.seconds]), reverse: report.reverse, equality: report.equality })}`);
    const eq = report.equality as { equal: boolean; disks: { disk: string; writtenBytes: number; bytesCompared: number }[] };
    expect(eq.equal).toBe(true);
    expect(eq.disks[0]!.writtenBytes).toBeGreaterThan(0);
    expect(eq.disks[0]!.bytesCompared).toBeGreaterThanOrEqual(eq.disks[0]!.writtenBytes);
    expect(report.start).toBe('hook');
    expect(existsSync(started)).toBe(true);
    const failover = must(await s.api(`GET`, `/v1/failovers/${id}`), 'failover').body;
    expect(failover.state).toBe('failed-back');
    expect(failover.endedAt).not.toBeNull();

    // The CLI: the report by --status, a second failback of the failed-back failover and a bad id refused in one line.
    const config = await s.cliConfig();
    const shown = await runBin('service', ['failback', id, '--status', '--json', '--config', config]);
    expect(shown.code, shown.stderr).toBe(0);
    expect(JSON.parse(shown.stdout)).toMatchObject({ id: report.id, state: 'done', result: 'done' });
    const twice = await runBin('service', ['failback', id, '--config', config]);
    expect(twice.code).toBe(1);
    expect(twice.stderr.trim().split('\n')).toEqual([expect.stringMatching(/failed-back; there is nothing to fail back/)]);
    const bad = await runBin('service', ['failback', 'fo-nosuch', '--config', config]);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split('\n')).toEqual([expect.stringMatching(/no failover fo-nosuch/)]);

    // The hoster's disk, now the replica's only layer, equals the on-premises disk.
    const [disk] = await listDisks(s.svc.ctx.db, 'acme', 'web1');
    const adopted = await readState(disk!.replicaDir);
    expect(adopted).toMatchObject({ state: 'resync_required', resyncReason: FailbackReason, points: [] });
    await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', join(disk!.replicaDir, adopted.layers[0]!), source]);
    const hosterBytes = await referee('qemu-io', ['-f', 'raw', '-c', `read -P 0x5a ${2 * MiB} ${MiB}`, source]);
    expect(hosterBytes).not.toMatch(/Pattern verification failed/);

    // Forward replication resumed at the agent: a delta base of digests, then only the next change.
    daemon.kill('SIGTERM');
    await new Promise((r) => daemon!.once('exit', r));
    daemon = undefined;
    await s.state.writeConfig({ ...(await s.state.readConfig('web1')), paused: false });
    const resync = await s.replicate();
    console.log(`delta base after failback: ${resync[0]!.stats!.sentBytes} bytes sent for a ${DiskMiB} MiB disk`);
    expect(resync[0]!.stats!.sentBytes).toBeLessThan(DiskMiB * MiB / 100);
    await write(source, 'raw', [10, 44], 1, 0x77);
    const next = await s.replicate();
    expect(next[0]!.baseBytes ?? 0).toBe(0);
    expect(next[0]!.stats!.changedBytes).toBe(2 * MiB);
    const top = (await readState(disk!.replicaDir)).layers;
    await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', join(disk!.replicaDir, top.at(-1)!), source]);
  }, 60 * MinuteMs);
});
