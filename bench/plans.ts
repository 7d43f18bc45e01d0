/**
 * Recovery plan bench: a test run of 200 VMs in 10 groups (40 in 4 with --quick), each group followed
 * by wait-ready, on the webhook failover driver whose orchestrator (a real HTTP server on loopback)
 * answers every step at once, so the time is the service's own: the run's overhead per VM, the cut of
 * every point at the start, a VM's failover from request to ready. The service runs in this process
 * with real PostgreSQL and Redis, as the plan tests run it (test/plans/plan-harness.ts); the VMs are
 * protected and replicated by the agent first (not timed). Nothing here is a pass/fail test.
 */
import type { PlanRunReport } from '../service/plans/report.js';
import { must } from '../test/failover/failover-harness.js';
import { bigPlan, PlanScenario, runFigures } from '../test/plans/plan-harness.js';
import type { Benchmark, BenchRow } from './lib.js';

export const plansBench: Benchmark = {
  name: 'plans',
  description: 'a recovery plan test run of 200 VMs in 10 groups on the webhook driver: overhead per VM',
  async run(ctx) {
    const [groups, perGroup] = ctx.quick ? [4, 10] : [10, 20];
    const { names, body } = bigPlan('bench', groups, perGroup);
    const p = await PlanScenario.start({ capacity: names.length + 8 });
    try {
      process.stderr.write(`bench plans: protecting and replicating ${names.length} VMs (minutes)\n`);
      await p.vms(names);
      must(await p.s.api('POST', '/v1/tenants/acme/plans', body), 'plan');
      const t0 = Date.now();
      const run = must(await p.s.api<PlanRunReport>('POST', '/v1/tenants/acme/plans/bench/runs', { mode: 'test' }), 'run').body;
      const done = await p.waitRun('acme', 'bench', run.id, (r) => r.endedAt !== null, 60 * 60_000);
      const f = runFigures(done, (Date.now() - t0) / 1000);
      const n = `${names.length} VMs, ${groups} groups`;
      const rows: BenchRow[] = [
        { name: `plans: ${n}, request to completed`, ours: `${f.wallSeconds.toFixed(1)} s`, peer: '-', ratio: `${done.counts.ready} ready`, goal: 'completes', ok: done.state === 'completed' && done.counts.ready === names.length },
        { name: 'plans: overhead per VM', ours: `${f.perVmMs} ms`, peer: '-', ratio: '-', goal: 'report', ok: undefined },
        { name: 'plans: cut at the start, per VM', ours: `${f.cutPerVmMs} ms`, peer: '-', ratio: `${f.cutSeconds} s in all`, goal: 'report', ok: undefined },
        { name: 'plans: one VM, request to ready', ours: `${f.boot.median} s`, peer: '-', ratio: `p90 ${f.boot.p90} s`, goal: 'report', ok: undefined },
      ];
      must(await p.s.api('POST', `/v1/tenants/acme/plans/bench/runs/${run.id}/stop`, {}), 'stop');
      await p.waitRun('acme', 'bench', run.id, (r) => r.vms.every((v) => v.state === 'stopped'), 10 * 60_000);
      return rows;
    } finally {
      await p.stop();
    }
  },
};
