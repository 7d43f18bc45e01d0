/**
 * The daemon: a timer around Replicator.cycle(). Each VM runs at its frequency, measured from the
 * start of its last cycle, independently of the others (a VM busy with a days-long initial copy does
 * not hold back the cycles of the rest); a failed cycle is logged and retried with backoff (never
 * later than the VM's next regular cycle). The list of VMs and their settings are re-read every pass,
 * so protect, pause and resume take effect without a restart.
 */
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

  logger.info({ stateDir: state.dir }, 'agent running');
  while (!signal.aborted) {
    await options.beforePass?.().catch((err: unknown) => logger.error({ err: err instanceof Error ? err.message : String(err) }, 'before pass'));
    const vms = await state.listVms();
    for (const vm of [...schedules.keys()]) if (!vms.includes(vm) && !schedules.get(vm)!.running) schedules.delete(vm);
    for (const vm of vms) {
      const s = schedules.get(vm) ?? { due: 0, failures: 0 };
      schedules.set(vm, s);
      if (!signal.aborted && !s.running && Date.now() >= s.due) s.running = runVm(vm, s);
    }
    const idle = [...schedules.values()].filter((s) => !s.running);
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
  logger.info({}, 'agent stopped');
}
