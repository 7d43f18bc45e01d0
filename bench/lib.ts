/**
 * Benchmark helpers. Every benchmark runs ours and a peer side by side in one run and prints the
 * ratio: these machines are noisy, so ratios are what we compare, never absolute times.
 */
import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

export interface BenchContext {
  /** A scratch directory kept between runs (inputs such as the 4 GiB synthetic disk are cached). */
  workDir: string;
  /** Path of ../shared/tools/mkdisk.py. */
  mkdisk: string;
  /** Smaller inputs for a quick run (`npm run bench -- --quick`). */
  quick: boolean;
}

export interface BenchRow {
  name: string;
  ours: string;
  peer: string;
  /** ours/peer as the benchmark defines it, with its goal. */
  ratio: string;
  goal: string;
  ok: boolean | undefined;
}

export interface Benchmark {
  name: string;
  description: string;
  run(ctx: BenchContext): Promise<BenchRow[]>;
}

/** Wall time of fn in seconds. */
export async function timeIt(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

export interface CommandResult { seconds: number; stdout: string; stderr: string; maxRssKiB: number | undefined }

/** Runs a command to completion; throws with its stderr if it fails. Measures wall time and peak RSS. */
export function runCommand(cmd: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn('/usr/bin/time', ['-f', '%M', cmd, ...args], { cwd: options.cwd, env: options.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const lines = stderr.trimEnd().split('\n');
      const rss = Number(lines.at(-1));
      if (Number.isFinite(rss)) lines.pop();
      stderr = lines.join('\n');
      if (code !== 0) reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.slice(-2000)}`));
      else resolve({ seconds, stdout, stderr, maxRssKiB: Number.isFinite(rss) ? rss : undefined });
    });
  });
}

/** Runs a command (its output dropped); wall seconds from here, CPU seconds (user + system) from /usr/bin/time. */
export function runTimed(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<{ wall: number; cpu: number }> {
  return new Promise((res, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn('/usr/bin/time', ['-f', '%U %S', cmd, ...args], { env: env ?? process.env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const wall = Number(process.hrtime.bigint() - t0) / 1e9;
      const m = /([\d.]+) ([\d.]+)\s*$/.exec(stderr);
      if (code !== 0 || !m) reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.slice(-2000)}`));
      else res({ wall, cpu: Number(m[1]) + Number(m[2]) });
    });
  });
}

/** The synthetic disk of ../shared/tools/mkdisk.py, made once per size (and seed) and kept in workDir. */
export async function syntheticDisk(ctx: BenchContext, sizeMiB: number, seed?: number): Promise<string> {
  const { existsSync } = await import('node:fs');
  await mkdir(ctx.workDir, { recursive: true });
  const path = join(ctx.workDir, `synthetic-${sizeMiB}${seed === undefined ? '' : `-seed${seed}`}.raw`);
  if (!existsSync(path)) {
    process.stderr.write(`bench: making a ${sizeMiB} MiB synthetic disk\n`);
    await runCommand('python3', [ctx.mkdisk, `${path}.tmp`, String(sizeMiB), ...(seed === undefined ? [] : ['--seed', String(seed)])]);
    const { rename } = await import('node:fs/promises');
    await rename(`${path}.tmp`, path);
  }
  return path;
}

export const mbps = (bytes: number, seconds: number) => `${(bytes / seconds / 1e6).toFixed(0)} MB/s`;
export const secs = (s: number) => `${s.toFixed(2)} s`;
