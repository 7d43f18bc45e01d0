/**
 * npm run demo (end to end): with no server running at all, starts the service on embedded defaults
 * (PGlite catalog, file object store, the private redis-server serve runs on a socket in its data
 * directory) in a temporary directory, creates a tenant, enrolls an agent,
 * protects a small VHDX, replicates it, writes into it, replicates again, exports the latest recovery
 * point and shows that it equals the source. Everything goes through the two commands, as a user
 * would type them. Prints each step; exit 0 when the export equals the source, else one line and 1.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort } from '../helpers.js';

const root = resolve(import.meta.dirname, '..', '..');
const agentBin = join(root, 'bin', 'lifeboat-agent.js');
const serviceBin = join(root, 'bin', 'lifeboat-service.js');
const step = (text: string) => process.stdout.write(`• ${text}\n`);

class DemoError extends Error {}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d; });
    child.stderr.on('data', (d: Buffer) => { err += d; });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolvePromise(out) : reject(new DemoError(`${[cmd, ...args].join(' ').replace(root, '.')} failed: ${(err || out).trim().split('\n').at(-1)}`))));
  });
}

/** Starts `lifeboat-service serve` and resolves when it prints its ready line. */
function serve(config: string): Promise<ChildProcess> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [serviceBin, 'serve', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const onData = (d: Buffer) => {
      out += d;
      if (/^lifeboat-service ready/m.test(out)) resolvePromise(child);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('close', (code) => reject(new DemoError(`lifeboat-service serve exited ${code}: ${out.trim().split('\n').at(-1)}`)));
  });
}

/** The running serve, stopped (and waited for) before the directory goes. */
let service: ChildProcess | undefined;

/** SIGTERM, then waits until serve (and with it its Redis and catalog) has finished writing. */
async function stopService(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const closed = new Promise((r) => child.once('close', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  await closed;
  clearTimeout(timer);
}

async function demo(dir: string): Promise<void> {
  const data = join(dir, 'service');
  const state = join(dir, 'agent');
  const disk = join(dir, 'web01.vhdx');
  const exported = join(dir, 'web01-latest.raw');

  await run(process.execPath, [serviceBin, 'init', '--data-dir', data, '--public-host', 'localhost']);
  const config = join(data, 'lifeboat.json');
  // Free ports, so the demo never collides with a service already running here.
  const c = JSON.parse(await readFile(config, 'utf8')) as { api: { port: number }; agentEndpoint: { port: number; publicUrl: string } };
  c.api.port = await freePort();
  c.agentEndpoint.port = await freePort();
  c.agentEndpoint.publicUrl = `https://localhost:${c.agentEndpoint.port}`;
  await writeFile(config, JSON.stringify(c, null, 2));
  step(`service initialized in ${data} (PGlite catalog, file object store, ${process.env.REDIS_URL ? 'Redis at REDIS_URL' : 'private Redis'}, its own CA)`);
  service = await serve(config);
  const svc = (...args: string[]) => run(process.execPath, [serviceBin, ...args, '--config', config]);
  const agent = (...args: string[]) => run(process.execPath, [agentBin, ...args, '--state-dir', state]);
  step(`service running: agents at https://localhost:${c.agentEndpoint.port}, queues on ${process.env.REDIS_URL ? 'REDIS_URL' : `its own redis-server at ${join(data, 'redis', 'redis.sock')}`}`);
  await svc('tenant', 'create', 'acme');
  await svc('tenant', 'allow', 'acme', '--server', '*.acme.test');
  const token = (await svc('token', 'create', '--tenant', 'acme')).trim().split('\n').at(-1)!;
  step('tenant acme created; servers *.acme.test allowed; one-time enrollment token issued');

  step((await agent('enroll', '--service', `https://localhost:${c.agentEndpoint.port}`, '--token', token, '--name', 'hv01.acme.test')).trim());
  await run('qemu-img', ['create', '-q', '-f', 'vhdx', disk, '64M']);
  await run('qemu-io', ['-c', 'write -P 0xa5 0 3M', '-c', 'write -P 0x3c 40M 1M', disk]);
  step(`made ${disk} with qemu-img (dynamic VHDX, 64 MiB) and wrote 4 MiB into it with qemu-io`);
  step((await agent('protect', 'web01', '--disk', disk, '--frequency', '30s')).trim());
  step(`replicate: ${(await agent('run', '--once')).trim()}`);

  await run('qemu-io', ['-c', 'write -P 0x77 10M 256k', '-c', 'write -z 40M 64k', disk]);
  step('wrote 256 KiB and zeroed 64 KiB in the VM disk');
  step(`replicate: ${(await agent('run', '--once')).trim()}`);

  await waitApplied(svc);
  await svc('export', '--tenant', 'acme', '--vm', 'web01', '--disk', 'disk0', '--point', 'latest', '--format', 'raw', exported);
  step(`exported the latest recovery point to ${exported}`);
  await run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', disk, exported]);
  step('qemu-img compare: the exported recovery point equals the source disk');
}

/** Waits until the service applied every committed log (merges run in the background). */
async function waitApplied(svc: (...args: string[]) => Promise<string>): Promise<void> {
  for (let i = 0; i < 120; i++) {
    const vms = JSON.parse(await svc('vm', 'list', '--json')) as { name: string; pendingLogs: number; state: string }[];
    const vm = vms.find((v) => v.name === 'web01');
    if (vm && vm.pendingLogs === 0 && vm.state === 'replicating') {
      step('the service applied every log (vm list: replicating, no pending logs)');
      return;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new DemoError('the service did not apply the logs within a minute (see lifeboat-service vm list)');
}

const dir = await mkdtemp(join(tmpdir(), 'lifeboat-e2e-demo-'));
try {
  await demo(dir);
  step('demo complete');
} catch (err) {
  process.stderr.write(`demo: ${err instanceof DemoError ? err.message : (err as Error).stack}\n`);
  process.exitCode = 1;
} finally {
  await stopService(service);
  await rm(dir, { recursive: true, force: true });
}
