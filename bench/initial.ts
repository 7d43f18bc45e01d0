/**
 * npm run bench -- initial: the initial copy as a new user waits for it, end to end, beside
 * `restic backup` of the same file in the same run (issue 19). A service on embedded defaults
 * (`lifeboat-service init` + `serve`: PGlite catalog, file object store, private Redis, its own CA)
 * in a scratch directory, a tenant, an enrolled agent, a VM protecting a copy of the 1 GiB synthetic
 * disk (../shared/tools/mkdisk.py, seed 11; 256 MiB with --quick); then, timed from the spawn of
 * `lifeboat-agent run --once`:
 * - acknowledged: run --once exits (scan, compress, seal, upload, commit, the base complete; goal
 *   ≤ 0.5x restic's time);
 * - applied: the service lists the VM's first recovery point (the base merged into the replica;
 *   polled on the operator API every 250 ms while run --once runs, every 50 ms after; goal ≤ 1.0x restic's time);
 * - the apply's own share (applied - acknowledged) beside `dd` writing the same bytes with fsync.
 * Commands run through bin/ (the bundle when `npm run build` made a current one, as a user gets it).
 * LIFEBOAT_BENCH_AGENT_NODE_ARGS and LIFEBOAT_BENCH_SERVICE_NODE_ARGS add node options to run --once and
 * serve (profiling: "--cpu-prof --cpu-prof-dir=DIR").
 * LIFEBOAT_BENCH_AGENT_WRAP and LIFEBOAT_BENCH_SERVICE_WRAP run run --once and serve under a command
 * (counting syscalls: "strace -f -c -o FILE"; the CPU figures then include the wrapper's).
 * LIFEBOAT_BENCH_ROUNDS=N repeats the agent and restic pair N times (a fresh service each time) and
 * prints every round: the machine is shared, compare the ratios within a round.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort } from '../test/helpers.js';
import { runCommand, runTimed, secs, syntheticDisk, type Benchmark, type BenchContext, type BenchRow } from './lib.js';

const root = resolve(import.meta.dirname, '..');
const agentBin = join(root, 'bin', 'lifeboat-agent.js');
const serviceBin = join(root, 'bin', 'lifeboat-service.js');

/** Node options for profiling the timed processes: LIFEBOAT_BENCH_AGENT_NODE_ARGS / LIFEBOAT_BENCH_SERVICE_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=DIR"). */
const nodeArgs = (who: 'AGENT' | 'SERVICE') => (process.env[`LIFEBOAT_BENCH_${who}_NODE_ARGS`] ?? '').split(' ').filter(Boolean);
/** The command line of a timed process: node with its options, under LIFEBOAT_BENCH_<who>_WRAP when set. */
function commandOf(who: 'AGENT' | 'SERVICE', args: string[]): [string, string[]] {
  const wrap = (process.env[`LIFEBOAT_BENCH_${who}_WRAP`] ?? '').split(' ').filter(Boolean);
  const line = [...wrap, process.execPath, ...nodeArgs(who), ...args];
  return [line[0]!, line.slice(1)];
}

/** Starts serve and resolves once it printed its ready line. */
function serve(config: string): Promise<ChildProcess> {
  return new Promise((res, reject) => {
    const child = spawn(...commandOf('SERVICE', [serviceBin, 'serve', '--config', config]), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      if (/^lifeboat-service ready/m.test(out)) res(child);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('close', (code) => reject(new Error(`serve exited ${code}: ${out.trim().split('\n').at(-1)}`)));
  });
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const closed = new Promise((r) => child.once('close', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  await closed;
  clearTimeout(timer);
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux; clock ticks of 10 ms). */
async function cpuOf(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).replace(/^.*\) /s, '').split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface Ours { ack: number; applied: number; agentCpu: number; serviceCpuAck: number; serviceCpuApplied: number }
interface Round extends Ours { restic: number; resticCpu: number; dd: number; load: number }

/** A service, a tenant and an enrolled agent protecting disk; then one timed run --once. */
async function ours(dir: string, disk: string): Promise<Ours> {
  const data = join(dir, 'service');
  const state = join(dir, 'agent');
  await runCommand(process.execPath, [serviceBin, 'init', '--data-dir', data, '--public-host', 'localhost']);
  const configPath = join(data, 'lifeboat.json');
  const c = JSON.parse(await readFile(configPath, 'utf8')) as { api: { port: number }; agentEndpoint: { port: number; publicUrl: string }; adminTokenFile: string };
  c.api.port = await freePort();
  c.agentEndpoint.port = await freePort();
  c.agentEndpoint.publicUrl = `https://localhost:${c.agentEndpoint.port}`;
  await writeFile(configPath, JSON.stringify(c, null, 2));
  const service = await serve(configPath);
  try {
    const svc = async (...args: string[]) => (await runCommand(process.execPath, [serviceBin, ...args, '--config', configPath])).stdout;
    const agent = (...args: string[]) => runCommand(process.execPath, [agentBin, ...args, '--state-dir', state]);
    await svc('tenant', 'create', 'bench');
    await svc('tenant', 'allow', 'bench', '--server', '*.bench.test');
    const token = (await svc('token', 'create', '--tenant', 'bench')).trim().split('\n').at(-1)!;
    await agent('enroll', '--service', c.agentEndpoint.publicUrl, '--token', token, '--name', 'hv01.bench.test');
    await agent('protect', 'vm1', '--disk', disk, '--frequency', '5m');
    const adminToken = (await readFile(resolve(data, c.adminTokenFile), 'utf8')).trim();
    const pointsUrl = `http://127.0.0.1:${c.api.port}/v1/tenants/bench/vms/vm1/points`;
    await runCommand('sync', []);

    const serviceCpu0 = await cpuOf(service.pid!);
    const t0 = process.hrtime.bigint();
    const since = () => Number(process.hrtime.bigint() - t0) / 1e9;
    let applied: number | undefined;
    let polling = true;
    let agentDone = false;
    const poll = (async () => {
      while (polling && applied === undefined) {
        try {
          const r = await fetch(pointsUrl, { headers: { authorization: `Bearer ${adminToken}` } });
          const body = (await r.json()) as { points?: unknown[] };
          if (r.ok && (body.points?.length ?? 0) > 0) applied = since();
        } catch {
          // the VM is not registered yet
        }
        // Slowly while the agent runs (each poll costs the service a token check and a query),
        // every 50 ms once it has exited.
        await new Promise((r) => setTimeout(r, agentDone ? 50 : 250));
      }
    })();
    const agentRun = await runTimed(...commandOf('AGENT', [agentBin, 'run', '--once', '--state-dir', state]));
    const ack = since();
    agentDone = true;
    const serviceCpuAck = await cpuOf(service.pid!) - serviceCpu0;
    const limit = Date.now() + 600_000;
    while (applied === undefined && Date.now() < limit) await new Promise((r) => setTimeout(r, 25));
    polling = false;
    await poll;
    if (applied === undefined) throw new Error('the service listed no recovery point within 10 minutes of the acknowledgement');
    return { ack, applied, agentCpu: agentRun.cpu, serviceCpuAck, serviceCpuApplied: await cpuOf(service.pid!) - serviceCpu0 };
  } finally {
    await stop(service);
  }
}

async function round(ctx: BenchContext, dir: string, pristine: string): Promise<Round> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const src = join(dir, 'vm.raw');
  await runCommand('cp', ['--sparse=always', pristine, src]);
  await runCommand('dd', [`if=${src}`, 'of=/dev/null', 'bs=4M']); // both read from the page cache
  const load = loadavg()[0]!;
  const o = await ours(join(dir, 'ours'), src);

  const env = { ...process.env, RESTIC_PASSWORD: 'bench', RESTIC_REPOSITORY: join(dir, 'restic') };
  await runCommand('restic', ['init', '-q'], { env });
  await runCommand('sync', []);
  const restic = await runTimed('restic', ['backup', '-q', '--no-cache', src], env);
  await runCommand('sync', []);
  const dd = (await runCommand('dd', [`if=${src}`, `of=${join(dir, 'dd.raw')}`, 'bs=4M', 'conv=sparse,fsync'])).seconds;
  void ctx;
  return { ...o, restic: restic.wall, resticCpu: restic.cpu, dd, load };
}

async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const sizeMiB = ctx.quick ? 256 : 1024;
  const pristine = await syntheticDisk(ctx, sizeMiB, 11);
  const dir = join(ctx.workDir, `initial-${sizeMiB}`);
  const rounds = Math.max(1, Number(process.env.LIFEBOAT_BENCH_ROUNDS ?? 1));
  const rows: BenchRow[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      const r = await round(ctx, dir, pristine);
      const tag = rounds > 1 ? ` #${i + 1}` : '';
      const ackRatio = r.ack / r.restic;
      const appliedRatio = r.applied / r.restic;
      rows.push(
        { name: `${sizeMiB} MiB base acknowledged vs restic${tag}`, ours: secs(r.ack), peer: secs(r.restic), ratio: `${ackRatio.toFixed(2)}x`, goal: '≤ 0.5x', ok: ackRatio <= 0.5 },
        { name: `${sizeMiB} MiB base applied (point) vs restic${tag}`, ours: secs(r.applied), peer: secs(r.restic), ratio: `${appliedRatio.toFixed(2)}x`, goal: '≤ 1.0x', ok: appliedRatio <= 1 },
        { name: `  apply after the ack vs dd (load ${r.load.toFixed(1)})`, ours: secs(r.applied - r.ack), peer: `${secs(r.dd)} dd`, ratio: `${((r.applied - r.ack) / r.dd).toFixed(2)}x`, goal: 'info', ok: undefined },
        {
          name: '  CPU s: agent + service to ack, to applied', ours: `${r.agentCpu.toFixed(1)}+${r.serviceCpuAck.toFixed(1)}, +${(r.serviceCpuApplied - r.serviceCpuAck).toFixed(1)}`,
          peer: `${r.resticCpu.toFixed(1)} restic`, ratio: `${((r.agentCpu + r.serviceCpuAck) / r.resticCpu).toFixed(2)}x`, goal: 'info', ok: undefined,
        },
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return rows;
}

export const initialBench: Benchmark = {
  name: 'initial',
  description: 'agent run --once of a new disk against a service on embedded defaults, until acknowledged and until applied, beside restic backup and dd',
  run,
};
