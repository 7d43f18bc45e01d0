/**
 * Reverse cycles on the VM's frequency (docs/reverse.md "When cycles run"): job `reverse-cycle` on
 * the failover host's queue (queue failover-<host>, one job per failover: jobId reverse.<failover id>),
 * run by the host that runs the failed-over VM (its qemu holds the reverse bitmaps).
 *
 * Input: a failover id. The job runs one reverse cycle (cycle.ts) when the failover is committed, runs
 * on the qemu driver, has no failback under way (the failback's own final cycle closes the last log),
 * and its last reverse log was captured at least the VM's frequency ago (or it has none).
 * The reconciler (each host tick) adds the job of every failover of this host that is due and that
 * this process is not running; so a job Redis lost, or a worker killed mid-cycle, is run again at the
 * next tick. The cycle itself is crash-safe: a row is written only after its log is stored whole, the
 * frozen bitmap is merged back by the next cycle, which repeats the same sequence (nothing is applied
 * twice: the agent applies logs in (generation, sequence) order and skips what it applied).
 * Output: reverse_logs rows. Failure: a VM whose server registered no envelope key is skipped with a
 * warning (it is due again at the next tick); other errors throw (the queue's backoff retries).
 */
import type { Queryable } from '../catalog/db.js';
import type { FailoverRow } from '../catalog/failovers.js';
import { getFailover, listFailovers } from '../catalog/failovers.js';
import { listLiveFailbacks } from '../catalog/failbacks.js';
import { getVm } from '../catalog/vms.js';
import { QemuDriver } from '../failover/drivers/qemu.js';
import type { HostExtension } from '../failover/host.js';
import type { HostRuntime } from '../failover/job.js';
import { workDirOf } from '../failover/job.js';
import type { FailoverQueues } from '../failover/queue.js';
import { ServiceError } from '../errors.js';
import { reverseCycle, type ReverseCycleResult } from './cycle.js';

export const ReverseCycleJobName = 'reverse-cycle';

export function reverseCycleJobId(failoverId: string): string {
  return `reverse.${failoverId}`;
}

/** The capture time of the failover's last reverse log (any of its disks), or null before its first. */
export async function lastReverseCapture(db: Queryable, f: Pick<FailoverRow, 'id' | 'tenant' | 'vm'>): Promise<Date | null> {
  const [row] = await db.query<{ at: Date | null }>(`SELECT max(l.captured_at) AS at FROM reverse_logs l JOIN reverse_disks d USING (tenant, vm, disk)
    WHERE l.tenant = $1 AND l.vm = $2 AND d.failover_id = $3`, [f.tenant, f.vm, f.id]);
  return row?.at ?? null;
}

/** Why the failover gets no reverse cycle now, or undefined when one is due. */
export async function reverseNotDue(rt: HostRuntime, f: FailoverRow, now: Date): Promise<string | undefined> {
  if (f.endedAt || f.state !== 'committed') return `the failover is ${f.state}, not committed`;
  if (f.host !== rt.hostName) return `the failover runs on host ${f.host ?? '(none)'}`;
  if (!(rt.driver instanceof QemuDriver)) return `reverse cycles run on the qemu driver; this host runs ${rt.driver.kind}`;
  if ((await listLiveFailbacks(rt.ctx.db, rt.hostName)).some((fb) => fb.failoverId === f.id)) return 'a failback is under way';
  const vm = await getVm(rt.ctx.db, f.tenant, f.vm);
  if (!vm) return `VM ${f.vm} is not registered`;
  const last = await lastReverseCapture(rt.ctx.db, f);
  if (last && now.getTime() - new Date(last).getTime() < vm.frequencySeconds * 1000) return 'the last reverse cycle is younger than the VM\'s frequency';
  return undefined;
}

/**
 * Runs the failover's reverse cycle if it is due (checked again here: the job may have waited).
 * Returns the cycle, or undefined when none was due or the VM's server has no envelope key yet.
 */
export async function runReverseCycleJob(rt: HostRuntime, id: string, now: () => Date = () => new Date()): Promise<ReverseCycleResult | undefined> {
  const f = await getFailover(rt.ctx.db, id);
  if (!f || (await reverseNotDue(rt, f, now()))) return undefined;
  const workDir = workDirOf(rt, f.id);
  const qmp = await (rt.driver as QemuDriver).qmp(workDir);
  try {
    const r = await reverseCycle({ db: rt.ctx.db, store: rt.ctx.store, log: rt.log }, { failover: f, workDir, qmp });
    rt.log.info({ failover: f.id, tenant: f.tenant, vm: f.vm, cycle: r.cycle, disks: r.disks.map((d) => `${d.disk} ${d.generation}/${d.sequence}`) }, 'reverse cycle on the VM\'s frequency');
    return r;
  } catch (err) {
    if (err instanceof ServiceError && err.reason === 'no_envelope_key') {
      rt.log.warn({ failover: f.id, tenant: f.tenant, vm: f.vm }, err.message);
      return undefined;
    }
    throw err;
  }
}

/** Adds the job of every failover of this host whose reverse cycle is due and that this process is not running. */
export async function reconcileReverseCycles(rt: HostRuntime, queues: FailoverQueues, running: ReadonlySet<string>, now = new Date()): Promise<string[]> {
  const added: string[] = [];
  for (const f of await listFailovers(rt.ctx.db, { host: rt.hostName, active: true })) {
    if (running.has(f.id) || (await reverseNotDue(rt, f, now))) continue;
    await queues.enqueueJob(rt.hostName, ReverseCycleJobName, reverseCycleJobId(f.id), { id: f.id });
    added.push(f.id);
  }
  return added;
}

/** The host's part for reverse cycles: their jobs on its queue and their reconciler. */
export function reverseCycleExtension(): HostExtension {
  return {
    jobName: ReverseCycleJobName,
    run: async (rt, _queues, id) => { await runReverseCycleJob(rt, id); },
    reconcile: async (rt, queues, running) => { await reconcileReverseCycles(rt, queues, running); },
  };
}
