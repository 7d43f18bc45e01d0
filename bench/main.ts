/**
 * npm run bench [-- NAME... --quick --json]: runs each benchmark (ours beside a peer) and prints ratios.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Benchmark, BenchRow } from './lib.js';
import { cryptoBench } from './crypto.js';
import { logBench } from './log.js';
import { diskBenchmark } from './disk.js';
import { agentBench } from './agent.js';
import { initialBench } from './initial.js';
import { mergeBench } from './service.js';
import { loadBench } from './service-load.js';
import { mergeStagesBench } from './service-merge-stages.js';
import { mergeSmallBench } from './service-merge-small.js';
import { nbdBench } from './nbd.js';
import { failoverBench } from './failover.js';
import { plansBench } from './plans.js';
import { startupBench } from './startup.js';
import { rebuildBench } from './rebuild.js';
import { qemuSourceBench } from './qemu-source.js';
import { keysBench } from './keys.js';
import { portalBench } from './portal.js';
import { failbackBench, reverseBench } from './reverse.js';

const benchmarks: Benchmark[] = [
  cryptoBench,
  logBench,
  diskBenchmark,
  agentBench,
  initialBench,
  mergeBench,
  loadBench,
  mergeStagesBench,
  mergeSmallBench,
  nbdBench,
  failoverBench,
  plansBench,
  startupBench,
  rebuildBench,
  qemuSourceBench,
  keysBench,
  portalBench,
  reverseBench,
  failbackBench,
];

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const json = args.includes('--json');
const names = args.filter((a) => !a.startsWith('--'));
const unknown = names.filter((n) => !benchmarks.some((b) => b.name === n));
if (unknown.length > 0) {
  console.error(`bench: unknown benchmark ${unknown.join(', ')}; known: ${benchmarks.map((b) => b.name).join(', ')}`);
  process.exit(2);
}
const ctx = { workDir: process.env.LIFEBOAT_BENCH_DIR ?? join(root, '.bench'), mkdisk: process.env.LIFEBOAT_MKDISK ?? join(root, '..', 'shared', 'tools', 'mkdisk.py'), quick };
const rows: BenchRow[] = [];
for (const b of benchmarks.filter((x) => names.length === 0 || names.includes(x.name))) {
  process.stderr.write(`bench: ${b.name}: ${b.description}\n`);
  for (const row of await b.run(ctx)) {
    rows.push(row);
    if (!json) console.log(`${row.ok === false ? '✗' : row.ok ? '✓' : '·'} ${row.name.padEnd(44)} ours ${row.ours.padEnd(14)} peer ${row.peer.padEnd(14)} ratio ${row.ratio.padEnd(8)} goal ${row.goal}`);
  }
}
if (json) console.log(JSON.stringify(rows, null, 2));
