/**
 * lifeboat-agent status [--json]: per VM its state, last cycle, RPO lag (how far the replica is
 * behind now), pending bytes and initial-replication progress, from the local state alone (it works
 * when the service does not answer).
 */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { formatBytes } from '../../shared/units.js';
import { describeFailedOver, readFailedOver } from '../commands/records.js';
import type { FailedOverRecord } from '../commands/records.js';
import type { CycleStats, VmConfig, VmProgress } from '../state/schema.js';
import { agentState, withStateDir } from './agent-options.js';
import type { StateDirOption } from './agent-options.js';

export interface VmStatusReport {
  name: string;
  state: 'paused' | 'initial' | 'replicating' | 'resync' | 'waiting' | 'failed-over';
  /** Set once the VM was failed over (planned): no forward cycles; the final cycle and its capture time. */
  failedOver?: { kind: 'planned'; cycle: number; capturedAt: string; at: string };
  frequency: string;
  disks: { id: string; path: string; generation: number; nextSequence: number; initial: string }[];
  lastCycle: CycleStats | null;
  /** Seconds between now and the moment the replica last caught up with the VM; null before that. */
  rpoLagSeconds: number | null;
  pendingBytes: number;
  initialProgress: { bytesDone: number; bytesTotal: number; percent: number };
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
      if (opts.json) printJson({ stateDir: state.dir, enrolled: await state.hasIdentity(), vms: reports });
      else process.stdout.write(reports.length === 0 ? 'no VM is protected\n' : reports.map(describe).join(''));
    });
}

export function report(config: VmConfig, progress: VmProgress, now = Date.now(), failedOver?: FailedOverRecord): VmStatusReport {
  const disks = config.disks.map((d) => {
    const p = progress.disks[d.id];
    return { id: d.id, path: d.path, generation: p?.generation ?? 0, nextSequence: p?.nextSequence ?? 0, initial: p?.initial.state ?? 'pending', resync: p?.resyncReason ?? null, bytesDone: p?.initial.bytesDone ?? 0, bytesTotal: p?.initial.bytesTotal ?? 0 };
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
    disks: disks.map(({ id, path, generation, nextSequence, initial }) => ({ id, path, generation, nextSequence, initial })),
    lastCycle: progress.lastCycle,
    rpoLagSeconds: progress.lastCapturedAt ? Math.max(0, Math.round((now - Date.parse(progress.lastCapturedAt)) / 1000)) : null,
    pendingBytes: progress.pendingBytes,
    initialProgress: { bytesDone, bytesTotal, percent: bytesTotal === 0 ? (allDone ? 100 : 0) : Math.floor((bytesDone / bytesTotal) * 1000) / 10 },
  };
}

function describe(r: VmStatusReport): string {
  const c = r.lastCycle;
  const last = c ? `${c.outcome} at ${c.finishedAt} (${c.consistency}, changed ${formatBytes(c.changedBytes)}, sent ${formatBytes(c.sentBytes)}${c.error ? `: ${c.error}` : ''})` : 'none yet';
  return [
    r.failedOver ? `${r.name}: ${describeFailedOver(r.failedOver)}; no forward cycles` : `${r.name}: ${r.state}, every ${r.frequency}`,
    `  last cycle:  ${last}`,
    `  RPO lag:     ${r.rpoLagSeconds === null ? '-' : `${r.rpoLagSeconds} s`}`,
    `  pending:     ${formatBytes(r.pendingBytes)}`,
    `  initial:     ${r.initialProgress.percent}% (${formatBytes(r.initialProgress.bytesDone)} of ${formatBytes(r.initialProgress.bytesTotal)})`,
    ...r.disks.map((d) => `  ${d.id}: ${d.path} generation ${d.generation}, next log ${d.nextSequence}, initial ${d.initial}`),
    '',
  ].join('\n');
}
