/**
 * No arbitrary cap: a test run of 200 VMs in 10 groups (each group waits until its VMs are ready)
 * on the webhook failover driver, its orchestrator a real HTTP server on loopback answering at once,
 * completes with its report. The overhead per VM is printed (what the service spends, since the
 * orchestrator answers at once); timings are never asserted. docs/plans.md, Measured, has the figures.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlanRunReport } from '../../service/plans/report.js';
import { must } from '../failover/failover-harness.js';
import { bigPlan, PlanScenario, runFigures } from './plan-harness.js';

const Groups = 10;
const PerGroup = 20;
const MinuteMs = 60_000;

describe('a recovery plan of 200 VMs in 10 groups', () => {
  let p: PlanScenario;
  const { names, body } = bigPlan('big', Groups, PerGroup);

  beforeAll(async () => {
    p = await PlanScenario.start({ capacity: Groups * PerGroup + 8 });
    const t0 = Date.now();
    await p.vms(names);
    console.log(`plan scale: ${names.length} VMs protected and replicated in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }, 30 * MinuteMs);

  afterAll(async () => {
    await p?.stop();
  }, 10 * MinuteMs);

  it('completes a test run with every VM ready, reports it, and stops all 200 with one call', async () => {
    must(await p.s.api('POST', '/v1/tenants/acme/plans', body), 'create');
    const t0 = Date.now();
    const run = must(await p.s.api<PlanRunReport>('POST', '/v1/tenants/acme/plans/big/runs', { mode: 'test' }), 'run').body;
    const done = await p.waitRun('acme', 'big', run.id, (r) => r.endedAt !== null, 30 * MinuteMs);
    const wall = (Date.now() - t0) / 1000;
    expect(done.state).toBe('completed');
    expect(done.failures).toEqual([]);
    expect(done.counts).toEqual({ vms: 200, ready: 200, failed: 0 });
    expect(done.vms.every((v) => v.point.id !== null && v.rpoSeconds !== null && v.rtoSeconds !== null)).toBe(true);
    expect(done.steps.filter((s) => s.step.endsWith(': start')).map((s) => s.status)).toEqual(Array(Groups).fill('done'));
    // Groups in order: each group's VMs were all ready before the next group's first one was asked for.
    for (let g = 1; g < Groups; g++) {
      const prevReady = Math.max(...done.vms.filter((v) => v.group === g - 1).map((v) => Date.parse(v.readyAt!)));
      const started = Date.parse(done.steps.find((s) => s.step === `group ${g + 1} (g${g}): start`)!.startedAt);
      expect(started).toBeGreaterThanOrEqual(prevReady);
    }
    const html = await fetch(`${p.s.svc.apiUrl}/v1/tenants/acme/plans/big/runs/${run.id}/report.html`, { headers: { authorization: `Bearer ${await p.s.tenantToken('tenant-viewer', 'acme')}` } });
    expect((await html.text()).match(/<tr><td>vm\d{3}<\/td>/g)?.length).toBe(200);

    const f = runFigures(done, wall);
    console.log([
      `plan scale: ${f.vms} VMs in ${Groups} groups, request to completed ${f.wallSeconds.toFixed(1)} s (report: total RTO ${f.rtoSeconds} s)`,
      `  overhead per VM ${f.perVmMs} ms (the orchestrator answers at once, so all of it is the service's)`,
      `  cut of ${f.vms} points ${f.cutSeconds} s (${f.cutPerVmMs} ms per VM); group start steps ${f.startSeconds.join(', ')} s`,
      `  failover request to ready per VM: median ${f.boot.median} s, p90 ${f.boot.p90} s, max ${f.boot.max} s`,
    ].join('\n'));

    const stop = must(await p.s.api<{ stopping: string[] }>('POST', `/v1/tenants/acme/plans/big/runs/${run.id}/stop`, {}), 'stop').body;
    expect(stop.stopping.length).toBe(200);
    await p.waitRun('acme', 'big', run.id, (r) => r.vms.every((v) => v.state === 'stopped'), 10 * MinuteMs);
  }, 40 * MinuteMs);
});
