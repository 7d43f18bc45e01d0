/**
 * The daemon: a timer around Replicator.cycle(). Each VM runs at its frequency, measured from the
 * start of its last cycle, independently of the others (a VM busy with a days-long initial copy does
 * not hold back the cycles of the rest); a failed cycle is logged and retried with backoff (never
 * later than the VM's next regular cycle). The list of VMs and their settings are re-read every pass,
 * so protect, pause and resume take effect without a restart.
 *
 * Beside the cycles, the daemon keeps the command channel open (agent/commands/channel.ts: one
 * long-poll on the agent's own outbound connection) and runs what the service asks. A command may
 * hold a VM (no new cycle starts; the running one is waited for); a VM failed over
 * (vms/<vm>/failover.json) runs no forward cycle any more.
 */
import { readFailedOver } from '../commands/records.js';
import type { EngineLogger } from './context.js';
import type { Replicator } from './engine.js';
import { backoffDelay } from './retry.js';

export const PollMs = 5_000;

export interface DaemonOptions {
  logger: EngineLogger;
  signal: AbortSignal;
  /** Called before every pass (certificate renewal); may replace the replicator's transport. */
  beforePass?: () => Promise<void>;
  /**
   * For tests only: every VM cycles at this interval instead of its frequency (cli/run.ts takes it
   * from LIFEBOAT_AGENT_TEST_INTERVAL_MS). Unset in production.
   */
  intervalMs?: number;
  /** The command channel, run beside the cycles until signal aborts (cli/run.ts passes it). */
  commands?: (holds: VmHolds, signal: AbortSignal) => Promise<void>;
}

/** What a command may ask of the daemon's schedule. */
export interface VmHolds {
  /** No new cycle of the VM starts; resolves once its running cycle (if any) has ended. */
  hold(vm: string): Promise<void>;
  /** The VM's cycles are scheduled again. */
  release(vm: string): void;
}

interface Schedule { due: number; failures: number; running?: Promise<void> }

export async function runDaemon(replicator: Replicator, options: DaemonOptions): Promise<void> {
  const { logger, signal } = options;
  const { state } = replicator.ctx;
  const schedules = new Map<string, Schedule>();
  let wake: () => void = () => {};
  const intervalOf = (frequencyMs: number) => options.intervalMs ?? frequencyMs;

  const runVm = async (vm: string, s: Schedule) => {
    const started = Date.now();
    try {
      const config = await state.readConfig(vm);
      const r = await replicator.cycle(vm);
      s.failures = 0;
      s.due = r.outcome === 'skipped' ? Date.now() + PollMs : started + intervalOf(config.frequencyMs);
    } catch (err) {
      s.failures++;
      const frequency = await state.readConfig(vm).then((c) => intervalOf(c.frequencyMs), () => intervalOf(60_000));
      const delay = Math.min(frequency, backoffDelay(s.failures - 1, 1_000, 300_000));
      s.due = Date.now() + delay;
      logger.error({ vm, err: err instanceof Error ? err.message : String(err), retryInMs: delay, failures: s.failures }, 'cycle failed');
    } finally {
      s.running = undefined;
      wake();
    }
  };

  const held = new Set<string>();
  const holds: VmHolds = {
    async hold(vm) {
      held.add(vm);
      await schedules.get(vm)?.running;
    },
    release(vm) {
      held.delete(vm);
      wake();
    },
  };
  const failedOverSeen = new Set<string>();
  const isFailedOver = async (vm: string) => {
    const record = await readFailedOver(state, vm).catch((err: unknown) => {
      logger.error({ vm, err: err instanceof Error ? err.message : String(err) }, 'failover record');
      return undefined;
    });
    if (record && !failedOverSeen.has(vm)) {
      failedOverSeen.add(vm);
      logger.info({ vm, cycle: record.cycle, command: record.command }, 'VM is failed over: no forward cycles');
    }
    return record !== undefined;
  };

  logger.info({ stateDir: state.dir }, 'agent running');
  const channel = options.commands?.(holds, signal).catch((err: unknown) => {
    logger.error({ err: err instanceof Error ? err.message : String(err) }, 'command channel stopped');
  });
  while (!signal.aborted) {
    await options.beforePass?.().catch((err: unknown) => logger.error({ err: err instanceof Error ? err.message : String(err) }, 'before pass'));
    const vms = await state.listVms();
    for (const vm of [...schedules.keys()]) if (!vms.includes(vm) && !schedules.get(vm)!.running) schedules.delete(vm);
    const parked = new Set<string>();
    for (const vm of vms) {
      const s = schedules.get(vm) ?? { due: 0, failures: 0 };
      schedules.set(vm, s);
      // held is read after the await: a hold taken meanwhile must keep this cycle from starting.
      if ((await isFailedOver(vm)) || held.has(vm)) parked.add(vm);
      else if (!signal.aborted && !s.running && Date.now() >= s.due) s.running = runVm(vm, s);
    }
    const idle = [...schedules.entries()].filter(([vm, s]) => !s.running && !parked.has(vm)).map(([, s]) => s);
    const next = Math.min(Date.now() + PollMs, ...idle.map((s) => s.due));
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, Math.max(0, next - Date.now()));
      function done() {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      }
      wake = done;
      signal.addEventListener('abort', done);
    });
  }
  await Promise.all([...schedules.values()].map((s) => s.running));
  await channel;
  logger.info({}, 'agent stopped');
}
