/**
 * The agent's half of a planned failover against the real service (PostgreSQL catalog, VHDX replicas,
 * merges by Merger on Redis) with the real agent daemon (`lifeboat-agent run`, its own process): the
 * command reaches the daemon over its long-poll, the shutdown hook runs (it writes into the disks, as
 * a guest's last writes at shutdown would), a final application-consistent cycle ships, the result
 * names it, and the point at that cycle equals the source disks (qemu-img compare of its export); no
 * forward cycle follows. Then a daemon SIGKILLed right after receiving a command, and again right
 * after its final cycle was acknowledged, is restarted: the command is delivered again, the hook runs
 * once, one final cycle ships, and the result is reported. The CLI's mistakes are one line.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enroll } from '../../agent/enroll/enroll.js';
import { AgentState } from '../../agent/state/store.js';
import { getCommand, plannedFailoverResult, queueCommand, waitForCommand } from '../../service/commands/commands.js';
import { cutPoint } from '../../service/workers/cut-point.js';
import { referee } from '../helpers.js';
import type { MergeHarness } from '../service/helpers.js';
import { mergeHarness, operator } from '../service/helpers.js';

const agentBin = resolve(import.meta.dirname, '../../bin/lifeboat-agent.js');

let h: MergeHarness;
let state: AgentState;
let dir: string;
const daemons = new Set<ChildProcess>();

interface Cli { code: number | null; stdout: string; stderr: string }
function agent(args: string[]): Promise<Cli> {
  return new Promise((res) => {
    const child = spawn(process.execPath, [agentBin, ...args, '--state-dir', state.dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => res({ code, stdout, stderr }));
  });
}

/** `lifeboat-agent run` cycling every second; resolves its exit. */
function daemon(env: Record<string, string> = {}): { child: ChildProcess; exited: Promise<NodeJS.Signals | number | null>; log: () => string } {
  const child = spawn(process.execPath, [agentBin, 'run', '--state-dir', state.dir], {
    stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, LIFEBOAT_AGENT_TEST_INTERVAL_MS: '1000', ...env },
  });
  daemons.add(child);
  let log = '';
  child.stderr!.on('data', (d: Buffer) => { log = (log + d.toString()).slice(-200_000); });
  const exited = new Promise<NodeJS.Signals | number | null>((r) => child.on('exit', (code, signal) => { daemons.delete(child); r(signal ?? code); }));
  return { child, exited, log: () => log };
}

/** Ends daemons a failed test left behind (one engine per state directory). */
async function stopDaemons(): Promise<void> {
  await Promise.all([...daemons].map((d) => new Promise((r) => { d.once('exit', r); d.kill('SIGKILL'); })));
}

async function mergeAll(): Promise<void> {
  while ((await h.merger.merge()) > 0) { /* until nothing is pending */ }
}

async function newDisk(name: string, ...writes: string[]): Promise<string> {
  const path = join(dir, `${name}.vhdx`);
  await referee('qemu-img', ['create', '-q', '-f', 'vhdx', path, '16M']);
  if (writes.length > 0) await referee('qemu-io', [...writes.flatMap((w) => ['-c', w]), path]);
  return path;
}

/** A shutdown hook that logs its run and writes into every disk (the guest's last writes). */
async function hookFor(vm: string, disks: string[]): Promise<string> {
  const script = join(dir, `shutdown-${vm}.sh`);
  await writeFile(script, [
    '#!/bin/sh', 'set -e',
    `echo "$LIFEBOAT_VM $LIFEBOAT_COMMAND" >> ${join(dir, 'hook.log')}`,
    ...disks.map((d, i) => `qemu-io -c 'write -P 0x${(0x70 + i).toString(16)} 9M 512K' ${d} > /dev/null`),
  ].join('\n'));
  return `sh ${script}`;
}

const hookRuns = async (vm: string) => (await readFile(join(dir, 'hook.log'), 'utf8').catch(() => '')).split('\n').filter((l) => l.startsWith(`${vm} `)).length;
const logCount = async (vm: string) => Number((await h.svc.ctx.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM logs WHERE tenant = 'acme' AND vm = $1`, [vm]))[0]!.n);

async function expectPointEqualsSource(vm: string, cycle: number, capturedAt: string, sources: string[]): Promise<void> {
  await mergeAll();
  const point = await cutPoint(h.svc.ctx, h.redis, { tenant: 'acme', vm, timeoutMs: 60_000, lockPrefix: h.lockPrefix });
  expect(point.cycle).toBe(cycle);
  expect(point.capturedAt.toISOString()).toBe(capturedAt);
  for (const [i, source] of sources.entries()) {
    const out = join(dir, `export-${vm}-${i}.raw`);
    const r = await operator(h.svc, 'POST', `/v1/tenants/acme/vms/${vm}/exports`, { disk: `disk${i}`, point: String(point.id), format: 'raw', path: out });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', source, out]);
  }
  const consistency = await h.svc.ctx.db.query<{ consistency: string }>(`SELECT consistency FROM logs WHERE tenant = 'acme' AND vm = $1 AND cycle = $2`, [vm, cycle]);
  expect(consistency.map((c) => c.consistency)).toEqual(sources.map(() => 'application'));
}

const disks: Record<string, string[]> = {};

beforeAll(async () => {
  h = await mergeHarness();
  dir = h.env.dir;
  expect((await operator(h.svc, 'POST', '/v1/tenants', { name: 'acme' })).status).toBe(201);
  expect((await operator(h.svc, 'POST', '/v1/tenants/acme/authorizations', { pattern: '*.acme.test' })).status).toBeLessThan(300);
  const token = (await operator<{ token: string }>(h.svc, 'POST', '/v1/tenants/acme/tokens', {})).body.token;
  state = new AgentState(join(dir, 'agent'));
  await enroll(state, { serviceUrl: h.svc.agentUrl, token, serverName: 'hv01.acme.test' });
  disks.web01 = [await newDisk('web01-0', 'write -P 0x11 0 4M'), await newDisk('web01-1', 'write -P 0x12 2M 3M')];
  disks.web02 = [await newDisk('web02-0', 'write -P 0x21 1M 2M')];
  for (const vm of ['web01', 'web02']) {
    const p = await agent(['protect', vm, ...disks[vm]!.flatMap((d) => ['--disk', d]), '--frequency', '30s', '--shutdown-hook', await hookFor(vm, disks[vm]!)]);
    expect(p.code, p.stderr).toBe(0);
  }
  const once = await agent(['run', '--once']);
  expect(once.code, once.stderr).toBe(0);
  await mergeAll();
  // Changes after the initial copies, for the cycles to carry.
  await referee('qemu-io', ['-c', 'write -P 0x31 5M 1M', disks.web01[0]!]);
  await referee('qemu-io', ['-c', 'write -P 0x41 6M 1M', disks.web02[0]!]);
}, 180_000);

afterAll(async () => {
  await stopDaemons();
  await h?.close();
});

describe('planned failover at the agent', () => {
  it('runs the shutdown hook, ships a final cycle equal to the source, reports it, and stops replicating', async () => {
    const d = daemon();
    const cmd = await queueCommand(h.svc.ctx.db, { tenant: 'acme', vm: 'web01', kind: 'planned-failover', payload: { failover: 'fo-test-web01' } });
    const started = Date.now();
    const row = await waitForCommand(h.svc.ctx.db, cmd.id, 120_000);
    expect(row.state, `${row.error ?? ''}\n${d.log().slice(-4000)}`).toBe('done');
    console.info(`planned-failover command done ${Date.now() - started} ms after it was queued (daemon start included), ${row.finishedAt!.getTime() - row.deliveredAt!.getTime()} ms after its last delivery`);
    const result = plannedFailoverResult(row)!;
    expect(result).toMatchObject({ consistency: 'application', shutdown: 'hook' });
    expect(row.progress.map((p) => p.step)).toEqual(['received', 'hold', 'shutdown-hook', 'final-cycle', 'final-cycle-shipped']);
    expect(await hookRuns('web01')).toBe(1);
    await expectPointEqualsSource('web01', result.cycle, result.capturedAt, disks.web01!);

    // No forward cycle follows (the daemon cycles every second), and status says so.
    const logs = await logCount('web01');
    const later = await logCount('web02');
    await new Promise((r) => setTimeout(r, 3000));
    expect(await logCount('web01')).toBe(logs);
    expect(await logCount('web02')).toBeGreaterThan(later);
    const status = await agent(['status', '--json']);
    const vms = (JSON.parse(status.stdout) as { vms: { name: string; state: string; failedOver?: { cycle: number } }[] }).vms;
    expect(vms.find((v) => v.name === 'web01')).toMatchObject({ state: 'failed-over', failedOver: { cycle: result.cycle } });
    expect((await agent(['status'])).stdout).toContain(`web01: failed over (planned), final cycle ${result.cycle}`);
    const again = await agent(['failover', 'web01', '--planned']);
    expect(again.code).toBe(1);
    expect(again.stderr.trim()).toMatch(/^lifeboat-agent: web01 is already failed over \(planned\), final cycle \d+ \(captured [^)]+\)$/);

    // The daemon stops at once although its long-poll is open.
    const t = Date.now();
    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
    expect(Date.now() - t).toBeLessThan(10_000);
  }, 180_000);

  it('survives an agent killed after delivery and after its final cycle: delivered again, run once', async () => {
    await stopDaemons();
    const first = daemon({ LIFEBOAT_AGENT_TEST_COMMAND_KILL: 'received' });
    const cmd = await queueCommand(h.svc.ctx.db, { tenant: 'acme', vm: 'web02', kind: 'planned-failover', payload: { failover: 'fo-test-web02' } });
    expect(await first.exited).toBe('SIGKILL');
    expect(await hookRuns('web02')).toBe(0);
    expect((await getCommand(h.svc.ctx.db, cmd.id))?.state).toBe('delivered');
    expect(existsSync(join(state.dir, 'commands', `${cmd.id}.json`))).toBe(true);

    // Resumed from its record: the hook runs, the final cycle ships, then the agent dies again.
    const second = daemon({ LIFEBOAT_AGENT_TEST_COMMAND_KILL: 'final-cycle-done' });
    expect(await second.exited, second.log().slice(-4000)).toBe('SIGKILL');
    expect(await hookRuns('web02')).toBe(1);
    const logsAfterFinal = await logCount('web02');

    const third = daemon();
    const row = await waitForCommand(h.svc.ctx.db, cmd.id, 120_000);
    expect(row.state, `${row.error ?? ''}\n${third.log().slice(-4000)}`).toBe('done');
    expect(row.deliveries).toBeGreaterThanOrEqual(2);
    expect(await hookRuns('web02')).toBe(1);
    // The final cycle was not shipped again: no log after it.
    expect(await logCount('web02')).toBe(logsAfterFinal);
    const result = plannedFailoverResult(row)!;
    const finalLogs = await h.svc.ctx.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM logs WHERE tenant = 'acme' AND vm = 'web02' AND cycle >= $1`, [result.cycle]);
    expect(finalLogs[0]!.n).toBe(1);
    await expectPointEqualsSource('web02', result.cycle, result.capturedAt, disks.web02!);
    third.child.kill('SIGTERM');
    expect(await third.exited).toBe(0);
  }, 240_000);

  it('answers the CLI\'s mistakes in one line', async () => {
    const unknown = await agent(['failover', 'nosuch', '--planned']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr.trim().split('\n')).toEqual(['lifeboat-agent: VM "nosuch" is not protected on this server (see: lifeboat-agent status)']);
    const unplanned = await agent(['failover', 'web02']);
    expect(unplanned.code).toBe(1);
    expect(unplanned.stderr.trim().split('\n')).toHaveLength(1);
    expect(unplanned.stderr).toMatch(/--planned/);
  });
});
