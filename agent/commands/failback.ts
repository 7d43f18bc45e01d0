/**
 * The agent's half of a failback (docs/failback.md, agent protocol §13.7–§13.8):
 *
 * - `failback-apply` { failback, until: {disk: {generation, sequence}} }: applies the VM's reverse
 *   logs to its disks here (the paths it protects, in place) through the reverse applier, up to and
 *   including the final log of each disk the service names, then reads back every range those logs
 *   of the generation wrote and answers its SHA-256: { disks: [{disk, generation, sequence, ranges}] }.
 *   The service compares them with the same ranges of the hoster's disk (equality before the VM starts
 *   here). Idempotent: a log already applied is skipped, the digests are read again.
 * - `failback-start` { failback }: runs the VM's start hook (`protect --start-hook`; without one the
 *   operator starts it: said in the result). Idempotent: a hook that succeeded is recorded in the
 *   command's steps and not run again.
 * - `failback-resume` { failback }: removes `failover.json`, so the engine's cycles of the VM resume;
 *   the service has made the hoster's disk the replica by then, so the first is a delta base.
 */
import { openDisk } from '../../shared/disk/index.js';
import { digestRanges } from '../../shared/disk/ops/index.js';
import { userMessage } from '../../shared/errors.js';
import type { FailbackApplyResult } from '../../shared/protocol/schemas.js';
import { failbackApplyPayloadSchema } from '../../shared/protocol/schemas.js';
import { runHook } from '../replicate/hooks.js';
import { applyReverse, readReverseState } from '../reverse/apply.js';
import { ReverseClient } from '../reverse/client.js';
import type { CommandEnv } from './planned-failover.js';
import { finish } from './planned-failover.js';
import type { CommandRecord } from './records.js';
import { removeFailedOver } from './records.js';

/** How long a start hook may take before it is killed and the command fails. */
export const StartHookTimeoutMs = 15 * 60_000;

export async function runFailbackApply(env: CommandEnv, record: CommandRecord): Promise<CommandRecord> {
  const vm = record.vm;
  try {
    const payload = failbackApplyPayloadSchema.parse(record.payload);
    const config = await env.state.findConfig(vm);
    if (!config) return await finish(env, record, { error: `VM ${vm} is not protected on this server` });
    if (config.source && config.source.kind !== 'file') {
      return await finish(env, record, { error: `VM ${vm} is read through its ${config.source.kind} host, not from disk files here: apply its reverse logs to its disk files with lifeboat-agent reverse ${vm} --disk PATH…` });
    }
    const files = await env.state.readIdentity();
    await env.step(record, 'apply', `the reverse logs of ${vm} up to ${Object.entries(payload.until).map(([d, u]) => `${d} ${u.generation}/${u.sequence}`).join(', ')}`);
    const passes = await applyReverse({ state: env.state, files, client: new ReverseClient(files), vm, disks: config.disks.map((d) => d.path) });
    const s = await readReverseState(env.state, vm);
    const out: FailbackApplyResult['disks'] = [];
    for (const p of passes) {
      const want = payload.until[p.disk];
      if (!want) return await finish(env, record, { error: `the service named no final reverse log of disk ${p.disk}` });
      if (p.generation !== want.generation || p.sequence < want.sequence) {
        return await finish(env, record, { error: `disk ${p.disk} is at reverse log ${p.generation}/${p.sequence}, not ${want.generation}/${want.sequence}${p.waiting ? ` (${p.waiting})` : ''}` });
      }
      const image = await openDisk(p.path, { readOnly: true });
      try {
        out.push({ disk: p.disk, generation: p.generation, sequence: p.sequence, ranges: await digestRanges(image, s.disks[p.disk]?.ranges ?? []) });
      } finally {
        await image.close();
      }
    }
    const ranges = out.reduce((n, d) => n + d.ranges.length, 0);
    await env.step(record, 'digests', `${ranges} range(s) received, read back and digested`);
    return await finish(env, record, { result: { disks: out } });
  } catch (err) {
    return finish(env, record, { error: userMessage(err) ?? (err instanceof Error ? err.message : String(err)) });
  }
}

export async function runFailbackStart(env: CommandEnv, record: CommandRecord): Promise<CommandRecord> {
  const vm = record.vm;
  try {
    const config = await env.state.findConfig(vm);
    if (!config) return await finish(env, record, { error: `VM ${vm} is not protected on this server` });
    const start = config.startHook ? 'hook' : 'none';
    if (config.startHook && !record.steps.some((s) => s.step === 'start-hook-done')) {
      await env.step(record, 'start-hook', `running ${config.startHook}`);
      const why = await runHook(config.startHook, { LIFEBOAT_VM: vm, LIFEBOAT_COMMAND: record.id }, StartHookTimeoutMs);
      if (why) return await finish(env, record, { error: `start hook failed: ${why}` });
      await env.step(record, 'start-hook-done', `${vm} started by its hook`);
    }
    if (start === 'none') await env.step(record, 'start', `${vm} has no --start-hook: the operator starts it here`);
    return await finish(env, record, { result: { start } });
  } catch (err) {
    return finish(env, record, { error: userMessage(err) ?? (err instanceof Error ? err.message : String(err)) });
  }
}

export async function runFailbackResume(env: CommandEnv, record: CommandRecord): Promise<CommandRecord> {
  const vm = record.vm;
  try {
    // The daemon skips a VM only while failover.json is there.
    await removeFailedOver(env.state, vm);
    await env.step(record, 'resumed', `forward replication of ${vm} resumes`);
    return await finish(env, record, { result: { resumed: true } });
  } catch (err) {
    return finish(env, record, { error: userMessage(err) ?? (err instanceof Error ? err.message : String(err)) });
  }
}
