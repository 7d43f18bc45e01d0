/**
 * lifeboat-agent status [--json]: per VM its state, last cycle, RPO lag (how far the replica is
 * behind now), pending bytes and initial-replication progress, from the local state alone (it works
 * when the service does not answer). Then each VM whose reverse logs are applied here (`reverse`): per
 * disk the last applied log, its lag (now − its capture time at the hoster), bytes received and the
 * logs pending when the last pass ended.
 */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { formatBytes } from '../../shared/units.js';
import { describeFailedOver, readFailedOver } from '../commands/records.js';
import type { FailedOverRecord } from '../commands/records.js';
import { readReverseState, ReverseStateFile, type ReverseState } from '../reverse/apply.js';
import type { CycleStats, VmConfig, VmProgress } from '../state/schema.js';
import { agentState, withStateDir } from './agent-options.js';
import type { StateDirOption } from './agent-options.js';

export interface VmStatusReport {
  name: string;
  state: 'paused' | 'initial' | 'replicating' | 'resync' | 'waiting' | 'failed-over';
  /** Set once the VM was failed over (planned): no forward cycles; the final cycle and its capture time. */
  failedOver?: { kind: 'planned'; cycle: number; capturedAt: string; at: string };
  frequency: string;
  disks: {
    id: string; path: string; generation: number; nextSequence: number; initial: string;
    /**
     * Where the disk is read: file (the scan tracker), qemu (its node, the bitmap recording, its
     * granularity, when it was last found lost) or hyperv (its slot, the reference point changes are
     * counted from, when tracking was last found lost).
     */
    source: 'file' | 'qemu' | 'hyperv' | 'libvirt';
    tracking?: { node: string; bitmap: string; granularity: number; lostAt: string | null };
  }[];
  /** The consistency of the last application- or crash-consistent point (the last cycle's), and the last application-consistent one. */
  lastConsistency: 'crash' | 'application' | null;
  lastAppConsistentAt: string | null;
  lastCycle: CycleStats | null;
  /** Seconds between now and the moment the replica last caught up with the VM; null before that. */
  rpoLagSeconds: number | null;
  pendingBytes: number;
  initialProgress: { bytesDone: number; bytesTotal: number; percent: number };
  /** Cycles since protect, by outcome. */
  counts: { ok: number; missed: number; failed: number };
  /** Set while the last cycle failed: what failed, when, and what to do about it. */
  problem: { error: string; at: string; todo: string } | null;
}

/** A VM reverse logs are applied for here (lifeboat-agent reverse), from vms/<vm>/reverse.json. */
export interface ReverseVmStatus {
  vm: string;
  disks: ReverseDiskStatus[];
}

export interface ReverseDiskStatus {
  disk: string;
  /** Where the logs go. */
  path: string;
  /** The last applied reverse log (0/0: none yet), when it was applied and when the hoster captured it. */
  generation: number;
  sequence: number;
  appliedAt: string | null;
  capturedAt: string | null;
  /** Seconds between now and the capture time of the last applied log; null before the first. */
  lagSeconds: number | null;
  /** Bytes of the logs received (sealed objects) and of the data they wrote. */
  receivedBytes: number;
  appliedBytes: number;
  /** Logs the service listed after the last applied one when the last pass ended (checkedAt). */
  pendingLogs: number | null;
  checkedAt: string | null;
}

export function registerStatus(program: Command): void {
  withStateDir(program
    .command('status')
    .description('show each protected VM: state, last cycle, RPO lag, pending bytes, initial-replication progress')
    .option('--json', 'print as JSON'))
    .action(async (opts: StateDirOption & { json?: boolean }) => {
      const state = agentState(opts);
      const reports: VmStatusReport[] = [];
      for (const vm of await state.listVms()) reports.push(report(await state.readConfig(vm), await state.readProgress(vm), Date.now(), await readFailedOver(state, vm)));
      const reverse: ReverseVmStatus[] = [];
      for (const vm of await state.listVmsWith(ReverseStateFile)) reverse.push({ vm, disks: reverseReport(await readReverseState(state, vm)) });
      const enrolled = await state.hasIdentity();
      if (opts.json) return printJson({ stateDir: state.dir, enrolled, vms: reports, reverse });
      if (!enrolled) process.stdout.write(`not enrolled: nothing replicates until this agent is (lifeboat-agent enroll TOKEN; state in ${state.dir})\n`);
      process.stdout.write(reports.length === 0 ? 'no VM is protected\n' : reports.map(describe).join(''));
      for (const r of reverse) process.stdout.write([`${r.vm}: reverse (writes at the hoster applied here)`, ...r.disks.map(describeReverse), ''].join('\n'));
    });
}

export function report(config: VmConfig, progress: VmProgress, now = Date.now(), failedOver?: FailedOverRecord): VmStatusReport {
  const disks = config.disks.map((d) => {
    const p = progress.disks[d.id];
    return {
      id: d.id, path: d.path, generation: p?.generation ?? 0, nextSequence: p?.nextSequence ?? 0, initial: p?.initial.state ?? 'pending', resync: p?.resyncReason ?? null,
      bytesDone: p?.initial.bytesDone ?? 0, bytesTotal: p?.initial.bytesTotal ?? 0, tracking: p?.tracking,
    };
  });
  const bytesDone = disks.reduce((s, d) => s + d.bytesDone, 0);
  const bytesTotal = disks.reduce((s, d) => s + d.bytesTotal, 0);
  const allDone = disks.every((d) => d.initial === 'done');
  const state: VmStatusReport['state'] = failedOver ? 'failed-over' : config.paused ? 'paused'
    : disks.some((d) => d.resync) ? 'resync'
      : !allDone ? (disks.some((d) => d.initial === 'running') ? 'initial' : 'waiting')
        : 'replicating';
  const frequency = Object.entries({ '30s': 30_000, '5m': 300_000, '15m': 900_000 }).find(([, ms]) => ms === config.frequencyMs)?.[0] ?? `${config.frequencyMs}ms`;
  return {
    name: config.name,
    state,
    ...(failedOver ? { failedOver: { kind: failedOver.kind, cycle: failedOver.cycle, capturedAt: failedOver.capturedAt, at: failedOver.at } } : {}),
    frequency,
    disks: disks.map(({ id, path, generation, nextSequence, initial, tracking }) => ({
      id, path, generation, nextSequence, initial, source: config.source?.kind ?? 'file', ...(tracking ? { tracking } : {}),
    })),
    lastCycle: progress.lastCycle,
    lastConsistency: progress.lastCycle?.outcome === 'failed' ? null : progress.lastCycle?.consistency ?? null,
    lastAppConsistentAt: progress.lastAppConsistentAt,
    rpoLagSeconds: progress.lastCapturedAt ? Math.max(0, Math.round((now - Date.parse(progress.lastCapturedAt)) / 1000)) : null,
    pendingBytes: progress.pendingBytes,
    initialProgress: { bytesDone, bytesTotal, percent: bytesTotal === 0 ? (allDone ? 100 : 0) : Math.floor((bytesDone / bytesTotal) * 1000) / 10 },
    counts: progress.counts,
    problem: progress.lastCycle?.outcome === 'failed'
      ? { error: progress.lastCycle.error ?? 'unknown error', at: progress.lastCycle.finishedAt, todo: whatToDo(progress.lastCycle.error ?? '') }
      : null,
  };
}

/** The reverse side of a VM's status: per disk the last applied log, its lag, bytes received, logs pending. */
export function reverseReport(reverse: ReverseState, now = Date.now()): ReverseDiskStatus[] {
  return Object.entries(reverse.disks).map(([disk, d]) => ({
    disk, path: d.path, generation: d.generation, sequence: d.sequence, appliedAt: d.appliedAt, capturedAt: d.capturedAt ?? null,
    lagSeconds: d.capturedAt ? Math.max(0, Math.round((now - Date.parse(d.capturedAt)) / 1000)) : null,
    receivedBytes: d.receivedBytes ?? 0, appliedBytes: d.appliedBytes, pendingLogs: d.pendingLogs ?? null, checkedAt: d.checkedAt ?? null,
  }));
}

/** What an operator can do about a failed cycle, from its error. */
export function whatToDo(error: string): string {
  if (/does not answer|connection refused|timed out|not with TLS|ENOTFOUND|EHOSTUNREACH/i.test(error)) return 'the service is unreachable: check the network and that the service runs; the next cycle retries';
  if (/revoked|certificate|unauthenticated|not enrolled/i.test(error)) return 'the service no longer accepts this agent: enroll it again (lifeboat-agent enroll TOKEN --force)';
  if (/no such file|not found|is a directory|permission denied/i.test(error)) return 'a disk cannot be read: restore it at its path, or protect the VM again with the disk where it is now';
  if (/shrink|shrunk/i.test(error)) return 'a disk shrank, which a replica cannot: unprotect the VM and protect it again (a new base)';
  if (/quota|no space|ENOSPC/i.test(error)) return 'the service or this host is out of room: ask the hoster, or free space here; the next cycle retries';
  return 'the next cycle retries; lifeboat-agent run --once shows the error as it happens';
}

function describe(r: VmStatusReport): string {
  const c = r.lastCycle;
  const last = c ? `${c.outcome} at ${c.finishedAt} (${c.consistency}, changed ${formatBytes(c.changedBytes)}, sent ${formatBytes(c.sentBytes)}${c.error ? `: ${c.error}` : ''})` : 'none yet';
  return [
    r.failedOver ? `${r.name}: ${describeFailedOver(r.failedOver)}; no forward cycles` : `${r.name}: ${r.state}${r.problem ? ' (last cycle FAILED)' : ''}, every ${r.frequency}`,
    `  last cycle:  ${last}`,
    `  RPO lag:     ${r.rpoLagSeconds === null ? '-' : `${r.rpoLagSeconds} s`}`,
    `  pending:     ${formatBytes(r.pendingBytes)}`,
    `  initial:     ${r.initialProgress.percent}% (${formatBytes(r.initialProgress.bytesDone)} of ${formatBytes(r.initialProgress.bytesTotal)})`,
    `  consistency: ${r.lastConsistency ?? '-'} (last application-consistent: ${r.lastAppConsistentAt ?? 'never'})`,
    ...(r.problem ? [`  FAILING:     the cycle at ${r.problem.at} failed (${r.counts.failed} of ${r.counts.ok + r.counts.missed + r.counts.failed} cycles so far): ${r.problem.error}`, `  to do:       ${r.problem.todo}`] : []),
    ...r.disks.map((d) => `  ${d.id}: ${d.path} (${describeSource(d)}) generation ${d.generation}, next log ${d.nextSequence}, initial ${d.initial}`),
    '',
  ].join('\n');
}

function describeSource(d: VmStatusReport['disks'][number]): string {
  if (d.source === 'file') return 'file, scan';
  const t = d.tracking;
  if (!t) return `${d.source}, no cycle yet`;
  if (d.source === 'libvirt') return `libvirt disk ${t.node}, checkpoint ${t.bitmap}${t.lostAt ? `, last found lost ${t.lostAt}` : ''}`;
  if (d.source === 'hyperv') return `hyperv ${t.node}, reference point ${t.bitmap || '(none yet)'}${t.lostAt ? `, last found lost ${t.lostAt}` : ''}`;
  return `qemu node ${t.node}, bitmap ${t.bitmap}${t.granularity ? ` of ${formatBytes(t.granularity)} granules` : ''}${t.lostAt ? `, last found lost ${t.lostAt}` : ''}`;
}

function describeReverse(d: ReverseDiskStatus): string {
  const last = d.sequence === 0 ? 'no log applied yet' : `log ${d.generation}/${d.sequence} applied ${d.appliedAt ?? '-'}, captured ${d.capturedAt ?? '(unknown)'}`;
  const lag = d.lagSeconds === null ? '-' : `${d.lagSeconds} s`;
  const pending = d.pendingLogs === null ? 'pending unknown' : `${d.pendingLogs} log(s) pending at ${d.checkedAt ?? '-'}`;
  return `  ${d.disk}: ${d.path}: ${last}; lag ${lag}; received ${formatBytes(d.receivedBytes)} (${formatBytes(d.appliedBytes)} of data); ${pending}`;
}
