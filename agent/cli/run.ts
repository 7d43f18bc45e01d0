/**
 * lifeboat-agent run [--once]: the replication engine. --once does what is due now (pending initial
 * copies, then one cycle for every VM), waits for the service to acknowledge every commit and exits:
 * 0 when every VM succeeded, 1 with one line per failed VM otherwise. Without --once it runs as a
 * daemon, logging JSON lines (pino) on stderr, until SIGINT or SIGTERM.
 */
import type { Command } from 'commander';
import { pino } from 'pino';
import { LifeboatError, userMessage } from '../../shared/errors.js';
import { formatBytes } from '../../shared/units.js';
import { CommandClient } from '../commands/client.js';
import { runCommandChannel } from '../commands/channel.js';
import { readFailedOver } from '../commands/records.js';
import { silentLogger } from '../replicate/context.js';
import { runDaemon } from '../replicate/daemon.js';
import type { VmHolds } from '../replicate/daemon.js';
import { Replicator } from '../replicate/engine.js';
import type { VmCycleResult } from '../replicate/engine.js';
import { engineContext } from '../replicate/from-state.js';
import { takeRunLock } from '../state/lock.js';
import type { AgentState } from '../state/store.js';
import { agentState, withStateDir } from './agent-options.js';
import type { StateDirOption } from './agent-options.js';
import { progressBar } from './disk-common.js';

export function registerRun(program: Command): void {
  withStateDir(program
    .command('run')
    .description('replicate protected VMs: the daemon, or with --once what is due now')
    .option('--once', 'ship pending initial copies and one cycle for every VM, wait for the acknowledgements, exit'))
    .action(async (opts: StateDirOption & { once?: boolean }) => {
      const state = agentState(opts);
      // Not enrolled: say so before making anything (a mistyped --state-dir leaves no skeleton behind).
      await state.readIdentity();
      await state.init();
      const release = await takeRunLock(state.dir);
      try {
        if (opts.once) await runOnce(state);
        else await daemon(state);
      } finally {
        await release();
      }
    });
}

async function runOnce(state: AgentState): Promise<void> {
  const ctx = await engineContext(state, silentLogger);
  const bars = new Map<string, ReturnType<typeof progressBar>>();
  ctx.onInitialProgress = (vm, disk, done, total) => {
    const label = `${vm}/${disk} initial copy`;
    if (!bars.has(label)) bars.set(label, progressBar(label));
    bars.get(label)!.update({ done, total });
  };
  // A VM failed over (planned) runs no forward cycle any more.
  const results: VmCycleResult[] = [];
  const replicator = new Replicator(ctx);
  for (const vm of await state.listVms()) {
    const failedOver = await readFailedOver(state, vm);
    if (failedOver) {
      process.stdout.write(`${vm}: failed over (planned), final cycle ${failedOver.cycle}; no forward cycles\n`);
      continue;
    }
    try {
      results.push(await replicator.cycle(vm));
    } catch (err) {
      results.push({ vm, outcome: 'failed', error: userMessage(err) ?? (err instanceof Error ? err.message : String(err)) });
    }
  }
  for (const bar of bars.values()) bar.end();
  const failed = results.filter((r) => r.outcome === 'failed');
  for (const r of results) {
    if (r.outcome === 'failed') continue;
    const s = r.stats;
    const base = r.baseBytes ? `base of ${formatBytes(r.baseBytes)} shipped, then ` : '';
    process.stdout.write(s ? `${r.vm}: ${base}${r.outcome}, ${s.logs} log(s), changed ${formatBytes(s.changedBytes)}, sent ${formatBytes(s.sentBytes)}\n` : `${r.vm}: ${r.outcome}\n`);
  }
  if (failed.length > 0) {
    throw new LifeboatError('unavailable', failed.map((r) => `${r.vm}: ${r.error}`).join('; '));
  }
}

/**
 * LIFEBOAT_AGENT_TEST_INTERVAL_MS: for tests only (test/e2e/daemon-kill.test.ts), the daemon runs
 * every VM at this interval in milliseconds instead of its 30s/5m/15m frequency, so a test sees
 * several cycles of one daemon in seconds. Read here only; documented in docs/agent.md.
 */
export const TestIntervalEnv = 'LIFEBOAT_AGENT_TEST_INTERVAL_MS';

function testInterval(): number | undefined {
  const text = process.env[TestIntervalEnv];
  if (text === undefined || text === '') return undefined;
  const ms = Number(text);
  if (!/^\d+$/.test(text) || ms < 100) throw new LifeboatError('invalid_argument', `${TestIntervalEnv}="${text}" must be a whole number of milliseconds, at least 100 (unset it outside tests)`);
  return ms;
}

async function daemon(state: AgentState): Promise<void> {
  const logger = pino({ base: { app: 'lifeboat-agent' } }, pino.destination(2));
  const intervalMs = testInterval();
  if (intervalMs !== undefined) logger.warn({ intervalMs }, `${TestIntervalEnv} is set: every VM cycles at this interval instead of its frequency (for tests only)`);
  // A base of a disk added to a protected VM shares each interval with the other disks' cycles.
  const ctx = { ...(await engineContext(state, logger)), boundBases: true };
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  // Each pass re-reads the identity, renewing the certificate when due and learning a rotated replica key.
  const beforePass = async () => {
    const fresh = await engineContext(state, logger);
    ctx.transport = fresh.transport;
    ctx.recipient = fresh.recipient;
  };
  const replicator = new Replicator(ctx);
  const killAfter = process.env[TestCommandKillEnv] || undefined;
  if (killAfter !== undefined) logger.warn({ killAfter }, `${TestCommandKillEnv} is set: this agent kills itself at that point of a command (for tests only)`);
  const commands = (holds: VmHolds, signal: AbortSignal) => runCommandChannel({
    state, replicator, logger, client: async () => CommandClient.fromIdentity(await state.readIdentity()), ...(killAfter ? { killAfter } : {}),
  }, holds, signal);
  await runDaemon(replicator, { logger, signal: controller.signal, beforePass, intervalMs, commands });
}

/**
 * LIFEBOAT_AGENT_TEST_COMMAND_KILL: for tests only (test/commands/), the daemon SIGKILLs itself at
 * this point of a command (agent/commands/channel.ts: received, shutdown-done, final-cycle-done, done,
 * step:<name>), so a test sees a command survive a killed agent. Read here only; docs/agent.md.
 */
export const TestCommandKillEnv = 'LIFEBOAT_AGENT_TEST_COMMAND_KILL';
