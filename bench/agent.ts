/**
 * Agent benchmarks on the synthetic disk (../shared/tools/mkdisk.py), side by side in one run:
 * (a) the initial copy to a file store beside `restic backup` into a local repository (goal: our
 *     throughput ≥ 2x restic's);
 * (b) after `mkdisk.py --mutate 1 --seed 7` (1% of 64 KiB blocks rewritten), one cycle: bytes sent
 *     against bytes changed (goal ≤ 1.1x), beside what restic stores for the same change and what
 *     `rsync --inplace --no-whole-file` sends between two local copies; and its time against rsync's
 *     (goal: no longer);
 * (c) the agent's peak resident memory over both (goal < 256 MiB).
 * The agent runs as a child process (bench/agent-run.ts) so its time and memory are its own.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { formatBytes } from '../shared/units.js';
import { mbps, runCommand, secs, syntheticDisk, type Benchmark, type BenchContext, type BenchRow } from './lib.js';

const child = resolve(import.meta.dirname, 'agent-run.ts');
const tsx = resolve(import.meta.dirname, '..', 'node_modules', 'tsx', 'dist', 'cli.mjs');

interface AgentResult { seconds: number; sentBytes: number; changedBytes?: number; bytes?: number; rssKiB: number }

async function agent(mode: 'initial' | 'cycle', dir: string, disk: string): Promise<AgentResult> {
  const r = await runCommand(process.execPath, [tsx, child, mode, join(dir, 'state'), disk, join(dir, 'store')]);
  return { ...(JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Omit<AgentResult, 'rssKiB'>), rssKiB: r.maxRssKiB ?? 0 };
}

async function duBytes(path: string): Promise<number> {
  return Number((await runCommand('du', ['-sb', path])).stdout.split('\t')[0]);
}

async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const sizeMiB = ctx.quick ? 256 : 4096;
  const pristine = await syntheticDisk(ctx, sizeMiB);
  const dir = join(ctx.workDir, `agent-${sizeMiB}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const src = join(dir, 'vm.raw');
  const rsyncDst = join(dir, 'rsync-copy.raw');
  const repo = join(dir, 'restic');
  const env = { ...process.env, RESTIC_PASSWORD: 'bench', RESTIC_REPOSITORY: repo };
  try {
    await runCommand('cp', ['--sparse=always', pristine, src]);
    await runCommand('cp', ['--sparse=always', pristine, rsyncDst]);
    await runCommand('dd', [`if=${src}`, 'of=/dev/null', 'bs=4M']); // both sides read from the page cache
    // Write back the copies first: otherwise whoever runs first pays for their writeback in its fsyncs.
    await runCommand('sync', []);

    // (a) initial copy
    const initial = await agent('initial', join(dir, 'ours'), src);
    await runCommand('restic', ['init', '-q'], { env });
    await runCommand('sync', []);
    const resticInitial = await runCommand('restic', ['backup', '-q', '--no-cache', src], { env });
    const bytes = initial.bytes!;
    const ratioA = (bytes / initial.seconds) / (bytes / resticInitial.seconds);

    // (b) a 1% mutation: one cycle, restic's second backup, rsync between two local copies
    await runCommand('python3', [ctx.mkdisk, src, String(sizeMiB), '--mutate', '1', '--seed', '7']);
    const cycle = await agent('cycle', join(dir, 'ours'), src);
    const repoBefore = await duBytes(repo);
    await runCommand('restic', ['backup', '-q', '--no-cache', src], { env });
    const resticStored = (await duBytes(repo)) - repoBefore;
    const rsync = await runCommand('rsync', ['--inplace', '--no-whole-file', '--stats', src, rsyncDst]);
    const rsyncSent = Number(/Total bytes sent: ([\d,]+)/.exec(rsync.stdout)?.[1]?.replace(/,/g, '') ?? NaN);
    const changed = cycle.changedBytes!;
    const sentRatio = cycle.sentBytes / changed;
    const rss = Math.max(initial.rssKiB, cycle.rssKiB) * 1024;
    const verify = await runCommand('cmp', ['-s', src, rsyncDst]).then(() => true, () => false);

    return [
      { name: `initial copy of ${sizeMiB} MiB vs restic backup`, ours: mbps(bytes, initial.seconds), peer: mbps(bytes, resticInitial.seconds), ratio: `${ratioA.toFixed(2)}x`, goal: '≥ 2x', ok: ratioA >= 2 },
      { name: '1% cycle: sent / changed bytes', ours: `${sentRatio.toFixed(3)}x`, peer: `rsync ${(rsyncSent / changed).toFixed(3)}x`, ratio: `${sentRatio.toFixed(3)}x`, goal: '≤ 1.1x', ok: sentRatio <= 1.1 },
      { name: '1% cycle: restic stores / changed bytes', ours: `${sentRatio.toFixed(3)}x`, peer: `${(resticStored / changed).toFixed(2)}x`, ratio: `${(sentRatio / (resticStored / changed)).toFixed(3)}`, goal: 'info', ok: undefined },
      { name: '1% cycle time vs rsync --inplace', ours: secs(cycle.seconds), peer: secs(rsync.seconds), ratio: `${(cycle.seconds / rsync.seconds).toFixed(2)}x`, goal: '≤ 1x', ok: cycle.seconds <= rsync.seconds && verify },
      { name: 'agent peak resident memory', ours: formatBytes(rss), peer: '-', ratio: '-', goal: '< 256 MiB', ok: rss < 256 * 2 ** 20 },
    ];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export const agentBench: Benchmark = {
  name: 'agent',
  description: 'initial copy vs restic, a 1% cycle vs rsync and restic, agent memory',
  run,
};
