/**
 * The command channel of the daemon: one long-poll (GET /v1/commands, protocol §13) kept open on the
 * agent's own outbound connection beside the cycles; each command received runs once here.
 *
 * Delivery is at least once: the service delivers a command again to a restarted agent (a new
 * instance id) until its result is in. The agent is idempotent by command id: a command is recorded
 * (commands/<id>.json) before anything of it is done, a command already running here is not started
 * twice, a finished one is not run again (its recorded result is reported again), and one that was
 * running when the agent died resumes after its last recorded step, from the record, at start.
 */
import { randomBytes } from 'node:crypto';
import { userMessage } from '../../shared/errors.js';
import { commandKinds } from '../../shared/protocol/schemas.js';
import type { AgentCommand, CommandState } from '../../shared/protocol/schemas.js';
import type { EngineLogger } from '../replicate/context.js';
import type { VmHolds } from '../replicate/daemon.js';
import type { Replicator } from '../replicate/engine.js';
import { backoffDelay } from '../replicate/retry.js';
import type { AgentState } from '../state/store.js';
import type { CommandClient } from './client.js';
import { runFailbackApply, runFailbackResume, runFailbackStart } from './failback.js';
import type { CommandEnv } from './planned-failover.js';
import { runPlannedFailover } from './planned-failover.js';
import type { CommandRecord } from './records.js';
import { listCommandRecords, readCommandRecord, writeCommandRecord } from './records.js';

/** How long one long-poll waits at the service (it answers at once when a command is there). */
export const DefaultWaitSeconds = 25;

export interface ChannelOptions {
  state: AgentState;
  replicator: Replicator;
  logger: EngineLogger;
  /** A client with the current identity (it changes when the certificate is renewed). */
  client: () => Promise<CommandClient>;
  waitSeconds?: number;
  /**
   * For tests only (LIFEBOAT_AGENT_TEST_COMMAND_KILL, read by cli/run.ts): the process SIGKILLs
   * itself right after the record of this point is durable: received, shutdown-done, final-cycle-done,
   * done, or step:<name> (a step recorded, before it is reported).
   */
  killAfter?: string;
}

/** A fresh instance id: how the service tells this process from the one before a restart. */
export function newInstanceId(): string {
  return randomBytes(12).toString('base64url');
}

export async function runCommandChannel(options: ChannelOptions, holds: VmHolds, signal: AbortSignal): Promise<void> {
  const { state, logger } = options;
  const active = new Map<string, Promise<void>>();
  const start = (id: string, task: () => Promise<void>) => {
    if (active.has(id)) return;
    active.set(id, task().catch((err: unknown) => {
      logger.error({ command: id, err: userMessage(err) ?? (err instanceof Error ? err.stack : String(err)) }, 'command');
    }).finally(() => active.delete(id)));
  };
  const env = commandEnv(options, holds, signal);

  // Commands this agent had not finished or not reported when it stopped go on first.
  for (const r of await listCommandRecords(state)) {
    if (r.state === 'running' || !r.reported) start(r.id, () => execute(env, options, r, signal));
  }

  let instance = newInstanceId();
  let failures = 0;
  while (!signal.aborted) {
    let commands: AgentCommand[];
    try {
      const client = await options.client();
      commands = await client.poll(instance, options.waitSeconds ?? DefaultWaitSeconds, signal);
      failures = 0;
    } catch (err) {
      failures++;
      // What a failed poll may have marked delivered to this instance comes again to a new one.
      instance = newInstanceId();
      const delay = backoffDelay(failures - 1, 1_000, 60_000);
      logger.warn({ err: userMessage(err) ?? String(err), retryInMs: delay }, 'command poll failed');
      await sleep(delay, signal);
      continue;
    }
    for (const cmd of commands) start(cmd.id, () => receive(env, options, cmd, signal));
  }
  await Promise.all(active.values());
}

/** A command from the service: recorded before anything of it is done, unless it is known here. */
async function receive(env: CommandEnv, options: ChannelOptions, cmd: AgentCommand, signal: AbortSignal): Promise<void> {
  let record = await readCommandRecord(options.state, cmd.id);
  if (record) {
    options.logger.info({ command: cmd.id, state: record.state, deliveries: cmd.deliveries }, 'command delivered again; known here');
  } else {
    record = {
      version: 1, id: cmd.id, kind: cmd.kind, vm: cmd.vm, payload: cmd.payload, receivedAt: new Date().toISOString(), state: 'running',
      steps: [], shutdownDone: false, finalCycle: null, result: null, error: null, reported: false,
    };
    if (!(commandKinds as readonly string[]).includes(cmd.kind)) {
      record.state = 'failed';
      record.error = `this agent does not know command kind "${cmd.kind}" (upgrade the agent)`;
    }
    await env.save(record, 'received');
    options.logger.info({ command: cmd.id, kind: cmd.kind, vm: cmd.vm }, 'command received');
  }
  await execute(env, options, record, signal);
}

async function execute(env: CommandEnv, options: ChannelOptions, record: CommandRecord, signal: AbortSignal): Promise<void> {
  if (record.state === 'running') {
    if (record.steps.length === 0) await env.step(record, 'received', `by ${options.state.dir}`);
    record = record.kind === 'failback-apply' ? await runFailbackApply(env, record)
      : record.kind === 'failback-start' ? await runFailbackStart(env, record)
        : record.kind === 'failback-resume' ? await runFailbackResume(env, record)
        : await runPlannedFailover(env, record);
  }
  if (!record.reported) await report(options, record, signal);
}

/** Reports the recorded result until the service has it (or the daemon stops: reported at the next start). */
async function report(options: ChannelOptions, record: CommandRecord, signal: AbortSignal): Promise<void> {
  const body = record.state === 'done' ? { ok: true as const, result: record.result ?? {} } : { ok: false as const, error: record.error ?? record.state };
  for (let attempt = 0; !signal.aborted; attempt++) {
    try {
      const state = await (await options.client()).result(record.id, body);
      options.logger.info({ command: record.id, state }, 'command result reported');
      break;
    } catch (err) {
      const status = (err as { status?: number }).status ?? 0;
      if (status >= 400 && status < 500) {
        // The service no longer has it (its VM was removed) or refuses it for good: nothing to retry.
        options.logger.warn({ command: record.id, err: userMessage(err) ?? String(err) }, 'command result refused');
        break;
      }
      await sleep(backoffDelay(attempt, 1_000, 60_000), signal);
    }
  }
  if (signal.aborted) return;
  record.reported = true;
  await writeCommandRecord(options.state, record);
}

function commandEnv(options: ChannelOptions, holds: VmHolds, signal: AbortSignal): CommandEnv {
  const save = async (record: CommandRecord, point: string) => {
    await writeCommandRecord(options.state, record);
    if (options.killAfter === point) {
      options.logger.warn({ command: record.id, point }, 'test fault: killing this agent');
      process.kill(process.pid, 'SIGKILL');
    }
  };
  return {
    state: options.state, replicator: options.replicator, holds, logger: options.logger, save,
    async step(record, step, detail) {
      record.steps.push({ step, detail: detail ?? null, at: new Date().toISOString() });
      await save(record, `step:${step}`);
      options.logger.info({ command: record.id, vm: record.vm, step, detail }, 'command step');
      let state: CommandState = 'running';
      try {
        if (!signal.aborted) state = await (await options.client()).progress(record.id, step, detail);
      } catch (err) {
        // Progress is for people following along; the command goes on without it.
        options.logger.warn({ command: record.id, err: userMessage(err) ?? String(err) }, 'progress not reported');
      }
      return state === 'cancelled' ? 'cancelled' : 'go';
    },
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}
