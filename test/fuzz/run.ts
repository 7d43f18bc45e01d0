/**
 * `npm run fuzz`: the fuzz targets of test/fuzz with a long budget, then a table of what ran.
 *
 *   npm run fuzz                         every target, 180 s each
 *   npm run fuzz -- --seconds 600 vhdx   one target, ten minutes
 *   npm run fuzz -- --seed 1234 nbd      replay a run (the seed a failure printed)
 *
 * Runs vitest on test/fuzz/<target>.fuzz.test.ts with LIFEBOAT_FUZZ_SECONDS (per target, split
 * between its properties) and LIFEBOAT_FUZZ_REPORT, then prints per property: executions, seconds,
 * executions per second, the slowest input, the largest allocation, peak RSS growth, memory still
 * reachable after the run, and the result. Exits non-zero when a target failed; a failure's input
 * is in vitest's output (fast-check's counterexample and seed), a hang's or a memory blow-up's in
 * the findings directory the watchdog names.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { FuzzResult } from './harness.js';

const here = import.meta.dirname;
const root = resolve(here, '..', '..');
const targets = readdirSync(here).filter((f) => f.endsWith('.fuzz.test.ts')).map((f) => f.replace('.fuzz.test.ts', '')).sort();

function usage(message?: string): never {
  if (message) console.error(`npm run fuzz: ${message}`);
  console.error(`usage: npm run fuzz -- [--seconds N] [--seed S] [target...]\ntargets: ${targets.join(', ')}`);
  process.exit(2);
}

const args = process.argv.slice(2);
let seconds = 180;
let seed: string | undefined;
const chosen: string[] = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i]!;
  if (a === '--help' || a === '-h') usage();
  else if (a === '--seconds') seconds = Number(args[++i]);
  else if (a === '--seed') seed = args[++i];
  else if (targets.includes(a)) chosen.push(a);
  else usage(`unknown target or option ${JSON.stringify(a)}`);
}
if (!Number.isFinite(seconds) || seconds <= 0) usage('--seconds takes a positive number');
if (seed !== undefined && !/^-?\d+$/.test(seed)) usage('--seed takes an integer');
const run = chosen.length > 0 ? chosen : targets;

const report = join(tmpdir(), `lifeboat-fuzz-report-${process.pid}.jsonl`);
rmSync(report, { force: true });
console.log(`fuzzing ${run.join(', ')} for ${seconds} s each`);
const code = await new Promise<number>((done) => {
  const child = spawn(process.execPath, [join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--silent=passed-only', ...run.map((t) => `test/fuzz/${t}.fuzz.test.ts`)], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, LIFEBOAT_FUZZ_SECONDS: String(seconds), LIFEBOAT_FUZZ_REPORT: report, ...(seed === undefined ? {} : { LIFEBOAT_FUZZ_SEED: seed }) },
  });
  child.on('close', (c) => done(c ?? 1));
});

const rows = existsSync(report) ? readFileSync(report, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as FuzzResult & { rssGrowth: number }) : [];
rmSync(report, { force: true });
const mib = (n: number) => (n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${(n / 1024).toFixed(0)} KiB`);
const table = [
  ['target/property', 'executions', 'seconds', 'exec/s', 'slowest', 'largest alloc', 'peak RSS +', 'retained', 'result'],
  ...rows.map((r) => [
    `${r.target}/${r.property}`, String(r.executions), r.seconds.toFixed(0), (r.executions / r.seconds).toFixed(1), `${r.slowestMs} ms`,
    mib(r.largestAllocation), mib(r.rssGrowth), mib(r.retained), r.failed ? `FAILED (seed ${r.seed})` : 'ok',
  ]),
];
const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => row[c]!.length)));
console.log('');
for (const row of table) console.log(row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  '));
const total = new Map<string, number>();
for (const r of rows) total.set(r.target, (total.get(r.target) ?? 0) + r.executions);
console.log(`\nexecutions per target: ${[...total].map(([t, n]) => `${t} ${n}`).join(', ')}`);
process.exit(code);
