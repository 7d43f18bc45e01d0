/**
 * A plan run outlives the worker running it. The run's job runs in a failover host process of its
 * own (`lifeboat-service failover-host`, webhook driver, a real orchestrator on loopback), which is
 * SIGKILLed in the middle of a step (a delay between two groups):
 * - Redis kept: the job stays active in Redis with its lock; once the lock lapses, BullMQ's stalled
 *   check hands it to the next host's worker, which runs the step at the run's cursor again (the
 *   delay counting from its first start) and the run completes.
 * - Redis flushed too (FLUSHDB of the scenario's own database): no job is left anywhere; the next
 *   host's reconciler re-creates it from the catalog at its start, and the run completes.
 * Either way every VM fails over once (one failover per VM, the idempotency key per run and VM).
 */
import type { ChildProcess } from 'node:child_process';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningHost } from '../../service/failover/host.js';
import { startFailoverHost } from '../../service/failover/host.js';
import { failoverQueueName } from '../../service/failover/queue.js';
import { planRunExtension } from '../../service/plans/job.js';
import type { PlanRunReport } from '../../service/plans/report.js';
import { planRunJobId } from '../../service/plans/runs.js';
import { must } from '../failover/failover-harness.js';
import { PlanScenario } from './plan-harness.js';

const MinuteMs = 60_000;

describe('a plan run resumed after its worker was killed', () => {
  let p: PlanScenario;
  let redis: Redis;
  let queue: Queue;
  let host: RunningHost | undefined;
  const children: ChildProcess[] = [];

  const kill = async (child: ChildProcess) => {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  };
  const wipeRedis = async () => {
    const claim = await redis.get('lifeboat-claim');
    await redis.multi().flushdb().set('lifeboat-claim', claim ?? 'plan-resume-test', 'EX', 6 * 3600).exec();
    expect(await redis.dbsize()).toBe(1);
  };
  const delayStep = (r: PlanRunReport) => r.steps.find((s) => s.step.endsWith('after: delay'));

  /** Starts the run in a host process and kills that process while the delay step runs. */
  const runAndKill = async (plan: string) => {
    const child = await p.s.startHostProcess();
    children.push(child);
    const run = must(await p.s.api<PlanRunReport>('POST', `/v1/tenants/acme/plans/${plan}/runs`, { mode: 'test' }), 'run').body;
    await p.waitRun('acme', plan, run.id, (r) => delayStep(r)?.status === 'started', 2 * MinuteMs);
    expect(await queue.getJobState(planRunJobId(run.id))).toBe('active');
    await kill(child);
    return run.id;
  };

  const checkCompleted = (r: PlanRunReport) => {
    expect(r.state).toBe('completed');
    expect(r.failures).toEqual([]);
    // The delay ran twice (the second run of it waited only what was left), nothing else did.
    expect(delayStep(r)).toMatchObject({ status: 'done', attempts: 2 });
    expect(r.steps.filter((s) => s.index !== null && s.attempts !== 1).map((s) => s.step)).toEqual(['group 1 after: delay']);
    expect(r.vms.map((v) => v.state)).toEqual(['ready', 'ready']);
  };

  beforeAll(async () => {
    p = await PlanScenario.start({ externalHost: true });
    await p.vms(['first', 'second']);
    redis = new Redis(p.s.env.config.redis.url, { maxRetriesPerRequest: null });
    queue = new Queue(failoverQueueName(p.s.svc.ctx.config.failover.host.name), { connection: redis });
    for (const name of ['kept', 'flushed']) {
      must(await p.s.api('POST', '/v1/tenants/acme/plans', { name, groups: [{ vms: ['first'], after: [{ kind: 'delay', seconds: 15 }] }, { vms: ['second'] }] }), 'plan');
    }
  }, 5 * MinuteMs);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) await kill(c);
    await host?.stop();
    await queue?.close();
    redis?.disconnect();
    await p?.stop();
  }, 5 * MinuteMs);

  it('Redis kept: the stalled job goes to the next worker, which resumes the run at its step', async () => {
    const id = await runAndKill('kept');
    host = await startFailoverHost(p.s.svc.ctx, { extensions: [planRunExtension()] });
    // The job is still there (active under the dead worker's lock) until the stalled check frees it.
    const done = await p.waitRun('acme', 'kept', id, (r) => r.endedAt !== null, 4 * MinuteMs);
    checkCompleted(done);
    await host.stop();
    host = undefined;
    must(await p.s.api('POST', `/v1/tenants/acme/plans/kept/runs/${id}/stop`, {}), 'stop');
  }, 8 * MinuteMs);

  it('Redis flushed: the next host\'s reconciler re-creates the lost job and the run completes', async () => {
    const id = await runAndKill('flushed');
    await wipeRedis();
    expect(await queue.getJobState(planRunJobId(id))).toBe('unknown');
    host = await startFailoverHost(p.s.svc.ctx, { extensions: [planRunExtension()] });
    // Nothing but the reconciler (run as the host starts) could have put the job back.
    expect(['waiting', 'active']).toContain(await queue.getJobState(planRunJobId(id)));
    const done = await p.waitRun('acme', 'flushed', id, (r) => r.endedAt !== null, 2 * MinuteMs);
    checkCompleted(done);
  }, 8 * MinuteMs);
});
