/** Shared test helpers: scratch directories and the external referees (qemu-img, qemu-io). */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { openDisk } from '../shared/disk/index.js';

export const execFileP = promisify(execFile);

export const DefaultTestRedisUrl = 'redis://127.0.0.1:6379';
export const DefaultTestPgUrl = 'postgres://postgres@127.0.0.1:5432/test';
/** The Redis server the tests share (a base URL, no database): test/global-setup.ts exports it. */
export const TestRedisUrl = process.env.LIFEBOAT_TEST_REDIS || DefaultTestRedisUrl;
/** The PostgreSQL database the tests use (trust auth): test/global-setup.ts exports it. */
export const TestPgUrl = process.env.LIFEBOAT_TEST_PG || DefaultTestPgUrl;

/**
 * A port for a server the test configures before it starts. Chosen at random below the kernel's
 * ephemeral range, so an outgoing connection (to Redis, PostgreSQL, an emulator) cannot take it
 * between this check and the server's listen, as a port from listen(0) could; checked free on
 * every interface, as the service binds them all.
 */
export async function freePort(): Promise<number> {
  const range = await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').catch(() => '32768 60999');
  const ephemeralLow = Number(range.trim().split(/\s+/)[0]) || 32768;
  const low = 10_000;
  const high = Math.max(low + 1000, ephemeralLow);
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low));
    const free = await new Promise<boolean>((resolvePromise) => {
      const s = createServer();
      s.once('error', () => resolvePromise(false));
      s.listen(port, '0.0.0.0', () => s.close(() => resolvePromise(true)));
    });
    if (free) return port;
  }
  throw new Error(`no free port found between ${low} and ${high}`);
}

/** True when pid no longer runs: no such process, or a zombie not yet reaped. */
export async function processGone(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat === '' || stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
}

/** Polls cond every 100 ms until it holds; throws naming what after limitMs (a bound on a hang, not a timing). */
export async function until(cond: () => Promise<boolean> | boolean, what: string, limitMs = 30_000): Promise<void> {
  for (const end = Date.now() + limitMs; !(await cond());) {
    if (Date.now() > end) throw new Error(`not within ${limitMs / 1000} s: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A fresh directory removed after the test file; use inside describe/it via onTestFinished or afterAll. */
export async function scratchDir(prefix = 'lifeboat-test-'): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** Runs a referee command (qemu-img, qemu-io) and returns stdout; throws with stderr on failure. */
export async function referee(cmd: 'qemu-img' | 'qemu-io', args: string[]): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { maxBuffer: 64 << 20 });
  return stdout;
}

export interface CommandOutput { code: number; stdout: string; stderr: string }

const bins = {
  agent: resolve(import.meta.dirname, '..', 'bin', 'lifeboat-agent.js'),
  service: resolve(import.meta.dirname, '..', 'bin', 'lifeboat-service.js'),
};

/**
 * Runs one of our commands as a user runs it (bin/lifeboat-agent.js or bin/lifeboat-service.js) and
 * collects its exit code and output; a non-zero exit resolves, it does not reject.
 */
export function runBin(which: keyof typeof bins, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<CommandOutput> {
  return new Promise((res, reject) => {
    const child = spawn(process.execPath, [bins[which], ...args], {
      cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    if (options.input !== undefined) child.stdin!.end(options.input);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => res({ code: code ?? -1, stdout, stderr }));
  });
}

/** The whole virtual contents of a small image (a test's replica), read through our own reader. */
export async function readWholeImage(path: string): Promise<Buffer> {
  const img = await openDisk(path, { readOnly: true });
  try {
    const buf = Buffer.alloc(img.virtualSize);
    await img.read(0, buf);
    return buf;
  } finally {
    await img.close();
  }
}
