/**
 * lifeboat-agent failover VM --planned: asks the service for a planned failover of the VM (protocol
 * §13.5), then follows it, printing the hoster's steps and this agent's, until the final cycle is
 * shipped and acknowledged (exit 0) or the failover fails (one line, exit 1). The work itself is done
 * by the daemon (`lifeboat-agent run`), which receives the command over its long-poll; Ctrl-C stops
 * following, not the failover.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { ErrInvalidArgument, ErrNotFound, LifeboatError } from '../../shared/errors.js';
import { CommandClient } from '../commands/client.js';
import { describeFailedOver, listCommandRecords, readFailedOver } from '../commands/records.js';
import type { CommandRecord } from '../commands/records.js';
import type { AgentState } from '../state/store.js';
import { checkVmName } from '../state/store.js';
import { agentState, withStateDir } from './agent-options.js';
import type { StateDirOption } from './agent-options.js';

/** How often the failover and the local command record are looked at while following. */
export const FollowPollMs = 1000;

export function registerFailover(program: Command): void {
  withStateDir(program
    .command('failover')
    .description('fail a VM over to the hoster: --planned shuts it down here, ships a final cycle and hands it over (no data loss)')
    .argument('<vm>', 'a VM protected on this server')
    .option('--planned', 'a planned failover (the only kind started from the agent; the hoster starts unplanned ones)')
    .option('--no-follow', 'return once the service accepted the request'))
    .action(async (vm: string, opts: StateDirOption & { planned?: boolean; follow: boolean }) => {
      const state = agentState(opts);
      if (!opts.planned) throw ErrInvalidArgument('the agent starts planned failovers only: add --planned (an unplanned failover is started at the hoster)');
      checkVmName(vm);
      if (!(await state.findConfig(vm))) throw ErrNotFound(`VM "${vm}" is not protected on this server (see: lifeboat-agent status)`);
      const already = await readFailedOver(state, vm);
      if (already) throw new LifeboatError('conflict', `${vm} is already ${describeFailedOver(already)}`);
      const client = CommandClient.fromIdentity(await state.readIdentity());
      if (!(await daemonRunning(state))) process.stdout.write(`note: no 'lifeboat-agent run' uses ${state.dir}: the shutdown and final cycle wait until it runs\n`);
      const requestedAt = new Date().toISOString();
      const f = await client.requestPlannedFailover(vm);
      process.stdout.write(`planned failover ${f.id} of ${vm} requested (${f.state})\n`);
      if (!opts.follow) return;
      await follow(state, client, vm, f.id, requestedAt);
    });
}

async function follow(state: AgentState, client: CommandClient, vm: string, failoverId: string, requestedAt: string): Promise<void> {
  let hosterSeen = 0;
  let agentSeen = 0;
  for (;;) {
    const f = await client.failover(failoverId);
    for (const s of f.steps.slice(hosterSeen)) process.stdout.write(`  hoster: ${s.step} ${s.status}${s.detail ? `: ${s.detail}` : ''}\n`);
    hosterSeen = f.steps.length;
    const record = await commandOf(state, vm, failoverId, requestedAt);
    if (record) {
      for (const s of record.steps.slice(agentSeen)) process.stdout.write(`  agent:  ${s.step}${s.detail ? `: ${s.detail}` : ''}\n`);
      agentSeen = record.steps.length;
      if (record.state === 'done') {
        const r = record.result ?? {};
        process.stdout.write(`final cycle ${String(r.cycle)} of ${vm} (captured ${String(r.capturedAt)}) shipped and acknowledged; the hoster starts ${vm} from it\n`);
        return;
      }
      if (record.state === 'failed' || record.state === 'cancelled') throw new LifeboatError('conflict', `planned failover ${failoverId} of ${vm} ${record.state} at this agent: ${record.error ?? record.state}`);
    }
    if (f.state === 'failed' || f.state === 'reverted' || f.state === 'stopped') {
      throw new LifeboatError('conflict', `planned failover ${failoverId} of ${vm} ended as ${f.state}${f.error ? `: ${f.error}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, FollowPollMs));
  }
}

/** The local record of this failover's command: by its failover id, else the VM's newest since the request. */
async function commandOf(state: AgentState, vm: string, failoverId: string, since: string): Promise<CommandRecord | undefined> {
  const records = (await listCommandRecords(state)).filter((r) => r.vm === vm && r.kind === 'planned-failover');
  return records.find((r) => r.payload.failover === failoverId) ?? records.filter((r) => r.receivedAt >= since).at(-1);
}

/** Whether a daemon holds the state directory's run.lock (agent/state/lock.ts). */
async function daemonRunning(state: AgentState): Promise<boolean> {
  const pid = Number((await readFile(join(state.dir, 'run.lock'), 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
