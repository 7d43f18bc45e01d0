/**
 * The agent's half of a planned failover (command `planned-failover`, docs/agent.md "Planned
 * failover"): hold the VM's cycles, shut the VM down with its shutdown hook (without one, a qemu
 * source's VM through QMP system_powerdown, a hyperv source's through Stop-VM, a libvirt source's
 * through virsh shutdown; else take the
 * operator's word that it is off), ship one final application-consistent cycle of every disk and
 * wait for the service's acknowledgement, then record the VM as failed over: no forward cycle runs
 * for it any more. The result is the final cycle: { cycle, capturedAt, consistency, shutdown }.
 *
 * Every step is recorded in the command's record before the next begins, so a killed agent resumes
 * after the last step it finished: the hook that succeeded is not run again, a final cycle that was
 * acknowledged is not shipped again. A failure before the VM is recorded as failed over releases the
 * VM: it replicates on (a VM the hook shut down stays off until someone starts it).
 */
import { userMessage } from '../../shared/errors.js';
import type { EngineLogger } from '../replicate/context.js';
import type { VmHolds } from '../replicate/daemon.js';
import type { Replicator } from '../replicate/engine.js';
import { runHook } from '../replicate/hooks.js';
import { sshRunner, stopHypervVm } from '../sources/hyperv-view.js';
import { shutdownLibvirt } from '../sources/libvirt-shutdown.js';
import { powerdownQemu } from '../sources/qemu-powerdown.js';
import type { AgentState } from '../state/store.js';
import { runFinalCycle } from './final-cycle.js';
import type { CommandRecord } from './records.js';
import { readFailedOver, writeFailedOver } from './records.js';

/** How long a shutdown hook may take before it is killed and the command fails. */
export const ShutdownHookTimeoutMs = 15 * 60_000;

export interface CommandEnv {
  state: AgentState;
  replicator: Replicator;
  holds: VmHolds;
  logger: EngineLogger;
  /** Records a step (durably) and reports it; 'cancelled' when the service cancelled the command. */
  step(record: CommandRecord, step: string, detail?: string): Promise<'go' | 'cancelled'>;
  /** Writes the record durably; then a test fault may end the process here (cli/run.ts). */
  save(record: CommandRecord, point: string): Promise<void>;
}

export async function runPlannedFailover(env: CommandEnv, record: CommandRecord): Promise<CommandRecord> {
  const { state, holds } = env;
  const vm = record.vm;
  const done = await readFailedOver(state, vm);
  if (done) {
    if (done.command !== record.id) return finish(env, record, { error: `${vm} is already failed over (planned failover command ${done.command}, final cycle ${done.cycle})` });
    const shutdown = typeof record.payload.shutdown === 'string' ? record.payload.shutdown : 'hook';
    return finish(env, record, { result: { cycle: done.cycle, capturedAt: done.capturedAt, consistency: 'application', shutdown } });
  }
  const config = await state.findConfig(vm);
  if (!config) return finish(env, record, { error: `VM ${vm} is not protected on this server` });
  await holds.hold(vm);
  try {
    if (await env.step(record, 'hold', `no new cycle of ${vm} starts`) === 'cancelled') return cancelled(env, record);
    const viaQmp = !config.shutdownHook && config.source?.kind === 'qemu' ? config.source : undefined;
    const viaHyperv = !config.shutdownHook && config.source?.kind === 'hyperv' ? config.source : undefined;
    const viaLibvirt = !config.shutdownHook && config.source?.kind === 'libvirt' ? config.source : undefined;
    const shutdown = config.shutdownHook ? 'hook' : viaQmp ? 'qmp' : viaHyperv ? 'stop-vm' : viaLibvirt ? 'libvirt' : 'operator';
    if (!record.shutdownDone) {
      if (config.shutdownHook) {
        if (await env.step(record, 'shutdown-hook', `running ${config.shutdownHook}`) === 'cancelled') return cancelled(env, record);
        const why = await runHook(config.shutdownHook, { LIFEBOAT_VM: vm, LIFEBOAT_COMMAND: record.id }, ShutdownHookTimeoutMs);
        if (why) return finish(env, record, { error: `shutdown hook failed: ${why}; ${vm} goes on replicating` });
      } else if (viaQmp) {
        if (await env.step(record, 'shutdown-hook', `shutting ${vm} down through ${viaQmp.guestAgent ? 'its guest agent or ' : ''}QMP ${viaQmp.qmp}; waiting for the guest to be off`) === 'cancelled') return cancelled(env, record);
        try {
          await powerdownQemu(vm, viaQmp.qmp, ShutdownHookTimeoutMs, viaQmp.guestAgent);
        } catch (err) {
          return finish(env, record, { error: `shutdown failed: ${userMessage(err) ?? String(err)}; ${vm} goes on replicating` });
        }
      } else if (viaHyperv) {
        if (await env.step(record, 'shutdown-hook', `shutting ${vm} down with Stop-VM on ${viaHyperv.host}; waiting for it to be off`) === 'cancelled') return cancelled(env, record);
        try {
          await stopHypervVm((env.replicator.ctx.hypervRunner ?? sshRunner)(viaHyperv), vm, viaHyperv.vmName, ShutdownHookTimeoutMs);
        } catch (err) {
          return finish(env, record, { error: `shutdown failed: ${userMessage(err) ?? String(err)}; ${vm} goes on replicating` });
        }
      } else if (viaLibvirt) {
        if (await env.step(record, 'shutdown-hook', `shutting ${vm} down through virsh shutdown of domain ${viaLibvirt.domain}; waiting for it to be off`) === 'cancelled') return cancelled(env, record);
        try {
          await shutdownLibvirt(vm, viaLibvirt, ShutdownHookTimeoutMs);
        } catch (err) {
          return finish(env, record, { error: `shutdown failed: ${userMessage(err) ?? String(err)}; ${vm} goes on replicating` });
        }
      } else {
        if (await env.step(record, 'shutdown-hook', `${vm} has no --shutdown-hook: it must be off now (shut down by the operator); the final cycle takes that as given`) === 'cancelled') return cancelled(env, record);
      }
      record.shutdownDone = true;
      record.payload = { ...record.payload, shutdown };
      await env.save(record, 'shutdown-done');
    }
    if (!record.finalCycle) {
      if (await env.step(record, 'final-cycle', `one application-consistent cycle of every disk of ${vm}`) === 'cancelled') return cancelled(env, record);
      record.finalCycle = await runFinalCycle(env.replicator, vm);
      await env.save(record, 'final-cycle-done');
    }
    const fc = record.finalCycle;
    await writeFailedOver(state, vm, {
      version: 1, kind: 'planned', command: record.id, failover: typeof record.payload.failover === 'string' ? record.payload.failover : null,
      cycle: fc.cycle, capturedAt: fc.capturedAt, at: new Date().toISOString(),
    });
    await env.step(record, 'final-cycle-shipped', `final cycle ${fc.cycle} captured ${fc.capturedAt} acknowledged; ${vm} is failed over: no forward cycles`);
    return await finish(env, record, { result: { cycle: fc.cycle, capturedAt: fc.capturedAt, consistency: fc.consistency, shutdown } });
  } catch (err) {
    return finish(env, record, { error: userMessage(err) ?? (err instanceof Error ? err.message : String(err)) });
  } finally {
    holds.release(vm);
  }
}

async function cancelled(env: CommandEnv, record: CommandRecord): Promise<CommandRecord> {
  record.state = 'cancelled';
  record.error = 'cancelled by the service';
  // The service knows it cancelled: there is no result to report.
  record.reported = true;
  await env.save(record, 'done');
  return record;
}

export async function finish(env: CommandEnv, record: CommandRecord, outcome: { result: Record<string, unknown> } | { error: string }): Promise<CommandRecord> {
  if ('result' in outcome) {
    record.state = 'done';
    record.result = outcome.result;
  } else {
    record.state = 'failed';
    record.error = outcome.error;
    env.logger.error({ command: record.id, kind: record.kind, vm: record.vm, err: outcome.error }, 'command failed');
  }
  await env.save(record, 'done');
  return record;
}

