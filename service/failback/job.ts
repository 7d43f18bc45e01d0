/**
 * Job `failback` (queue failover-<host>, one job per failback: jobId failback.<id>, run by the host
 * that runs the failover's VM: its qemu holds the reverse bitmaps).
 *
 * Input: a failback id. The job reads the row and runs the step its state names, then the next:
 *   stopping     QMP system_powerdown, up to shutdown_timeout_seconds for the guest to power off,
 *                then QMP stop (vCPUs halted: crash-consistent) if it did not. qemu stays alive
 *                (-action shutdown=pause), holding the overlays' dirty bitmaps.
 *   final-cycle  one reverse cycle of the stopped disks (service/reverse/cycle.ts); the last log of
 *                each disk is recorded.
 *   confirming   agent command failback-apply: the agent applies every reverse log up to the final
 *                one and answers the digest of every range it received; verify.ts reads the same
 *                ranges of the hoster's overlays (and checks they cover every block written there).
 *   starting     agent command failback-start: the tenant's start hook starts the VM at home.
 *   removing     the hoster VM goes: public addresses removed, qemu quits; the failover ends
 *                `failed-back`. The overlays stay for the next step.
 *   adopting     adoptHosterDisks: each overlay becomes the replica's base of a new generation;
 *                then the failover's work directory is deleted.
 *   resuming     agent command failback-resume: forward cycles resume (the first is a delta base).
 * Output: the row's state (done or failed), its steps and its report.
 * Failure: a step before removing that fails ends the failback `failed` and gives the VM back to the
 * hoster (its failover committed again, its vCPUs running). From removing on there is no way back:
 * a failing step is recorded and thrown, and the queue (backoff) and the reconciler retry it.
 * Idempotent: every step's side effects can be repeated (a stopped guest is not stopped again, a
 * final cycle again is an empty log, agent commands are one per failback and kind, adoption finds a
 * disk adopted), and the state moves only after a step's side effects, so a killed worker resumes
 * by running the step at the row's state again.
 */
import { join } from 'node:path';
import { LifeboatError, userMessage } from '../../shared/errors.js';
import { failbackApplyResultSchema, failbackStartResultSchema } from '../../shared/protocol/schemas.js';
import type { FailbackApplyResult } from '../../shared/protocol/schemas.js';
import type { Queryable } from '../catalog/db.js';
import type { FailbackRow, FailbackState } from '../catalog/failbacks.js';
import { getFailback, listLiveFailbacks, recordFailbackStep } from '../catalog/failbacks.js';
import type { FailoverRow } from '../catalog/failovers.js';
import { getFailover, setFailoverState } from '../catalog/failovers.js';
import type { CommandKind } from '../../shared/protocol/schemas.js';
import { isFinished, queueCommand, waitForCommand } from '../commands/commands.js';
import type { CommandRow } from '../commands/commands.js';
import { QemuDriver } from '../failover/drivers/qemu.js';
import type { HostExtension } from '../failover/host.js';
import type { HostRuntime } from '../failover/job.js';
import { workDirOf } from '../failover/job.js';
import { removePublicIps } from '../failover/public-ips.js';
import { addStep } from '../failover/steps.js';
import { reverseCycle } from '../reverse/cycle.js';
import { adoptHosterDisks } from './adopt.js';
import { enqueueFailback, FailbackJobName } from './request.js';
import { checkEquality } from './verify.js';

/** Agent commands are waited for in slices this long (the host may be stopping). */
const SliceMs = 1000;
/** How long the agent may take to apply the final logs, start the VM or resume. */
const AgentWaitMs = 30 * 60_000;
/** The guest's state is looked at this often while it powers off. */
const PowerdownPollMs = 250;

/**
 * For tests only: LIFEBOAT_TEST_FAILBACK_KILL=<state> makes the process SIGKILL itself once the step
 * of that state has done its side effects, before the row moves on (a worker killed mid-failback).
 */
const KillAfter = process.env.LIFEBOAT_TEST_FAILBACK_KILL;

/** Records a step done (the row moves on); first, the test fault of that step. */
async function finishStep(db: Queryable, id: string, step: FailbackState, detail: string, change: Parameters<typeof recordFailbackStep>[3]): Promise<void> {
  if (KillAfter === step) {
    process.stderr.write(`test fault: failback ${id} step ${step} done, killing this process before it is recorded\n`);
    process.kill(process.pid, 'SIGKILL');
  }
  await recordFailbackStep(db, id, { step, status: 'done', detail }, change);
}

type Step = (rt: HostRuntime, fb: FailbackRow, f: FailoverRow, closing: () => boolean) => Promise<FailbackState | undefined>;

/** The host's part for failbacks: their jobs on its queue and their reconciler. */
export function failbackExtension(): HostExtension {
  let closing = false;
  return {
    jobName: FailbackJobName,
    run: (rt, _queues, id) => runFailbackJob(rt, id, () => closing),
    async reconcile(rt, queues, running) {
      for (const fb of await listLiveFailbacks(rt.ctx.db, rt.hostName)) if (!running.has(fb.id)) await enqueueFailback(queues, fb);
    },
    stop() {
      closing = true;
    },
  };
}

export async function runFailbackJob(rt: HostRuntime, id: string, closing: () => boolean = () => false): Promise<void> {
  const { db } = rt.ctx;
  for (let guard = 0; guard < 20; guard++) {
    if (closing()) return;
    const fb = await getFailback(db, id);
    if (!fb || fb.endedAt) return;
    const f = await getFailover(db, fb.failoverId);
    if (!f) throw new Error(`failback ${id}: its failover ${fb.failoverId} is gone`);
    const step = Steps[fb.state];
    if (!step) return;
    const name = fb.state === 'requested' ? 'stopping' : fb.state;
    await recordFailbackStep(db, id, { step: name, status: 'started', detail: null });
    let next: FailbackState | undefined;
    try {
      next = await step(rt, fb, f, closing);
    } catch (err) {
      const reason = userMessage(err) ?? (err instanceof Error ? err.message : String(err));
      rt.log.error({ failback: id, step: name, err }, 'failback step failed');
      if (PastReturn.has(fb.state)) {
        await recordFailbackStep(db, id, { step: name, status: 'failed', detail: `${reason}; retried` });
        throw err;
      }
      await giveBack(rt, fb, f, `${name}: ${reason}`);
      return;
    }
    if (next === undefined) return; // the host is stopping: the next one resumes at this state
  }
}

/** States from which the VM can no longer be given back to the hoster. */
const PastReturn = new Set<FailbackState>(['removing', 'adopting', 'resuming']);

function qemuOf(rt: HostRuntime): QemuDriver {
  if (!(rt.driver instanceof QemuDriver)) throw new LifeboatError('unsupported', `failback runs on the qemu driver; this host runs ${rt.driver.kind}`);
  return rt.driver;
}

const stopping: Step = async (rt, fb, f) => {
  const workDir = workDirOf(rt, f.id);
  const qmp = await qemuOf(rt).qmp(workDir).catch((err: unknown) => {
    throw new LifeboatError('unavailable', `the VM's qemu is not reachable (${userMessage(err) ?? String(err)}): it holds the bitmaps of what the VM wrote here`, { cause: err });
  });
  const status = async () => (await qmp.execute<{ status: string }>('query-status')).status;
  const started = Date.now();
  let how: string;
  if ((await status()) === 'running') {
    await qmp.execute('system_powerdown');
    const deadline = started + fb.shutdownTimeoutSeconds * 1000;
    while (Date.now() < deadline && (await status()) === 'running') await new Promise((r) => setTimeout(r, PowerdownPollMs));
  }
  const now = await status();
  if (now === 'shutdown') how = 'the guest powered off';
  else {
    if (now === 'running') await qmp.execute('stop');
    how = now === 'running' ? `the guest did not power off within ${fb.shutdownTimeoutSeconds} s: its vCPUs were stopped (crash-consistent)` : `the VM was already stopped (${now})`;
  }
  const seconds = (Date.now() - started) / 1000;
  await finishStep(rt.ctx.db, fb.id, 'stopping', how, { state: 'final-cycle', report: { stop: { guestPoweredOff: now === 'shutdown', seconds, detail: how } } });
  return 'final-cycle';
};

const finalCycle: Step = async (rt, fb, f) => {
  const workDir = workDirOf(rt, f.id);
  const r = await reverseCycle({ db: rt.ctx.db, store: rt.ctx.store, log: rt.log }, { failover: f, workDir, qmp: await qemuOf(rt).qmp(workDir) });
  const totals = (await rt.ctx.db.query<{ logs: number; bytes: number; data: number }>(`SELECT count(*)::int AS logs, coalesce(sum(size), 0)::float8 AS bytes, coalesce(sum(data_bytes), 0)::float8 AS data
    FROM reverse_logs l JOIN reverse_disks d USING (tenant, vm, disk) WHERE l.tenant = $1 AND l.vm = $2 AND d.failover_id = $3`, [f.tenant, f.vm, f.id]))[0]!;
  const disks = r.disks.map((d) => ({ disk: d.disk, generation: d.generation, sequence: d.sequence, changedBytes: d.changedBytes, dataBytes: d.dataBytes, logBytes: d.size }));
  const detail = disks.map((d) => `${d.disk}: log ${d.generation}/${d.sequence}, ${d.changedBytes} bytes changed`).join('; ');
  await finishStep(rt.ctx.db, fb.id, 'final-cycle', detail, {
    state: 'confirming', report: { finalCycle: { cycle: r.cycle, capturedAt: r.capturedAt.toISOString(), disks }, reverse: totals },
  });
  return 'confirming';
};

const confirming: Step = async (rt, fb, f, closing) => {
  const final = (fb.report.finalCycle as { disks: { disk: string; generation: number; sequence: number }[] }).disks;
  const until = Object.fromEntries(final.map((d) => [d.disk, { generation: d.generation, sequence: d.sequence }]));
  const row = await agentCommand(rt, fb, 'failback-apply', { failback: fb.id, until }, closing);
  if (!row) return undefined;
  const parsed = failbackApplyResultSchema.safeParse(row.result);
  if (!parsed.success) throw new LifeboatError('conflict', `the agent's answer to failback-apply names no digests (${JSON.stringify(row.result).slice(0, 200)})`);
  const ordered = f.fork.map((d) => parsed.data.disks.find((x) => x.disk === d.disk) ?? missingDisk(d.disk));
  const workDir = workDirOf(rt, f.id);
  const disks = await checkEquality(await qemuOf(rt).qmp(workDir), workDir, ordered);
  const equal = disks.every((d) => d.equal);
  const detail = disks.map((d) => `${d.disk}: ${d.ranges} range(s), ${d.bytesCompared} bytes compared${d.writtenBytes === null ? '' : `, ${d.writtenBytes} bytes written here, all covered`}${d.equal ? ', equal' : `: ${d.difference}`}`).join('; ');
  if (!equal) {
    await recordFailbackStep(rt.ctx.db, fb.id, { step: 'confirming', status: 'failed', detail }, { report: { equality: { equal, disks } } });
    throw new LifeboatError('conflict', `the agent's disk differs from the hoster's: ${disks.find((d) => !d.equal)!.difference}`);
  }
  await finishStep(rt.ctx.db, fb.id, 'confirming', detail, { state: 'starting', report: { equality: { equal, disks } } });
  return 'starting';
};

function missingDisk(disk: string): FailbackApplyResult['disks'][number] {
  throw new LifeboatError('conflict', `the agent's answer to failback-apply leaves out disk ${disk}`);
}

const starting: Step = async (rt, fb, _f, closing) => {
  const row = await agentCommand(rt, fb, 'failback-start', { failback: fb.id }, closing);
  if (!row) return undefined;
  const r = failbackStartResultSchema.safeParse(row.result);
  const start = r.success ? r.data.start : 'none';
  const stoppedAt = fb.steps.find((s) => s.step === 'stopping' && s.status === 'started')?.at;
  const windowSeconds = stoppedAt ? (Date.now() - Date.parse(stoppedAt)) / 1000 : null;
  await finishStep(rt.ctx.db, fb.id, 'starting', start === 'hook' ? 'the start hook started the VM at home' : 'the VM has no start hook: the tenant starts it at home', {
    state: 'removing', report: { start, windowSeconds },
  });
  return 'removing';
};

const removing: Step = async (rt, fb, f) => {
  const workDir = workDirOf(rt, f.id);
  await removePublicIps(rt, f);
  await rt.driver.stop(workDir, { graceful: false });
  if (KillAfter === 'removing') process.kill(process.pid, 'SIGKILL');
  await rt.ctx.db.transaction(async (tx) => {
    await addStep(tx, f.id, 'failback', 'done', `failback ${fb.id}: the VM runs at home; qemu ended here`);
    await setFailoverState(tx, f.id, 'failed-back', { endedAt: new Date() });
    await recordFailbackStep(tx, fb.id, { step: 'removing', status: 'done', detail: 'public addresses removed; qemu ended; the failover ended failed-back' }, { state: 'adopting' });
  });
  return 'adopting';
};

const adopting: Step = async (rt, fb, f) => {
  const workDir = workDirOf(rt, f.id);
  const disks = f.fork.map((d, i) => ({ id: d.disk, image: join(workDir, `disk${i}.qcow2`) }));
  const adopted = await adoptHosterDisks(rt.ctx, f.tenant, f.vm, disks, { redis: rt.redis, lockPrefix: rt.lockPrefix, qemuImg: rt.ctx.config.failover.qemu.img });
  await rt.driver.cleanup(workDir);
  const detail = adopted.map((a) => `${a.id}: generation ${a.generation}, ${a.bytes} bytes`).join('; ');
  await finishStep(rt.ctx.db, fb.id, 'adopting', detail, { state: 'resuming', report: { adopted } });
  return 'resuming';
};

const resuming: Step = async (rt, fb, _f, closing) => {
  const row = await agentCommand(rt, fb, 'failback-resume', { failback: fb.id }, closing);
  if (!row) return undefined;
  await finishStep(rt.ctx.db, fb.id, 'resuming', 'forward replication resumes at the agent: its next cycle is a delta base against the adopted replica', { state: 'done', ended: true });
  return 'done';
};

const Steps: Partial<Record<FailbackState, Step>> = {
  requested: stopping, stopping, 'final-cycle': finalCycle, confirming, starting, removing, adopting, resuming,
};

/**
 * The failback's command of a kind to the VM's agent (one per failback and kind: queueCommand finds
 * it again on resume), waited for in slices; undefined when the host is stopping. Throws when the
 * agent failed it, it expired or it was cancelled.
 */
async function agentCommand(rt: HostRuntime, fb: FailbackRow, kind: CommandKind, payload: Record<string, unknown>, closing: () => boolean): Promise<CommandRow | undefined> {
  const cmd = await queueCommand(rt.ctx.db, { tenant: fb.tenant, vm: fb.vm, kind, payload, requestedBy: `failback ${fb.id}`, expiresInMs: AgentWaitMs });
  const deadline = Date.now() + AgentWaitMs;
  for (;;) {
    if (closing()) return undefined;
    const row = await waitForCommand(rt.ctx.db, cmd.id, SliceMs);
    if (isFinished(row)) {
      if (row.state === 'done') return row;
      throw new LifeboatError('conflict', `the agent of ${row.serverFqdn} did not do ${kind} (command ${row.id} ${row.state}): ${row.error ?? row.state}`);
    }
    if (Date.now() > deadline) throw new LifeboatError('unavailable', `the agent of ${row.serverFqdn} did not finish ${kind} within ${AgentWaitMs / 60_000} minutes (command ${row.id} ${row.state})`);
  }
}

/** A failback that failed before the VM was removed: the VM runs at the hoster again, its failover committed. */
async function giveBack(rt: HostRuntime, fb: FailbackRow, f: FailoverRow, reason: string): Promise<void> {
  const workDir = workDirOf(rt, f.id);
  let resumed = 'the VM runs at the hoster again';
  try {
    const qmp = await qemuOf(rt).qmp(workDir);
    const { status } = await qmp.execute<{ status: string }>('query-status');
    if (status === 'shutdown') await qmp.execute('system_reset');
    if (status !== 'running') await qmp.execute('cont');
  } catch (err) {
    resumed = `the VM could not be resumed at the hoster: ${userMessage(err) ?? String(err)}`;
  }
  await rt.ctx.db.transaction(async (tx) => {
    await setFailoverState(tx, f.id, 'committed');
    await addStep(tx, f.id, 'failback', 'failed', `failback ${fb.id}: ${reason}; ${resumed}`);
    await recordFailbackStep(tx, fb.id, { step: 'failed', status: 'failed', detail: resumed }, { state: 'failed', error: reason, ended: true });
  });
}
