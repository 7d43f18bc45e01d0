/**
 * Recovery plans end to end on the webhook failover driver (a real orchestrator on loopback) with
 * real PostgreSQL, Redis and BullMQ: plan CRUD and its validation, tenant isolation (another tenant's
 * token gets 404, a viewer 403 on changes), a test run through every kind of action (a webhook action
 * whose receiver fails once then answers, a delay, a manual step approved through the API, wait-ready),
 * its report as JSON and HTML, its VMs stopped with one call; a cancel that cleans up; a group failure
 * under each policy.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlanRunReport } from '../../service/plans/report.js';
import { must } from '../failover/failover-harness.js';
import type { FailoverReport } from '../../service/failover/report.js';
import { PlanScenario, receiver, signedBy } from './plan-harness.js';

const MinuteMs = 60_000;

describe('recovery plans', () => {
  let p: PlanScenario;
  let hook: Awaited<ReturnType<typeof receiver>>;
  let hookKey: Buffer | undefined;
  const hookCalls: { ok: boolean; body: Record<string, unknown>; id: string }[] = [];
  let failNext = 1;

  beforeAll(async () => {
    p = await PlanScenario.start();
    await p.vms(['db01', 'app01', 'app02', 'web01']);
    hook = await receiver((req, raw, res) => {
      const ok = hookKey !== undefined && signedBy(hookKey, req, raw);
      hookCalls.push({ ok, body: JSON.parse(raw) as Record<string, unknown>, id: String(req.headers['webhook-id']) });
      if (!ok) return res.writeHead(401).end();
      if (failNext > 0) {
        failNext--;
        return res.writeHead(503).end('busy');
      }
      res.writeHead(204).end();
    });
  }, 5 * MinuteMs);

  afterAll(async () => {
    await p?.stop();
    hook?.server.close();
  });

  const api = <T = Record<string, unknown>>(method: string, path: string, body?: unknown, token?: string) => p.s.api<T>(method, path, body, token);
  const plan = (name: string, groups: unknown[], extra: Record<string, unknown> = {}) => ({ name, groups, ...extra });

  it('creates, shows, lists, changes and deletes plans; refuses bad ones with one line', async () => {
    const created = await api<{ webhookSecret: string; groups: unknown[] }>('POST', '/v1/tenants/acme/plans', plan('crud', [{ vms: ['db01'] }, { name: 'apps', vms: ['app01', 'app02'], onFailure: 'continue' }]));
    expect(created.status).toBe(201);
    expect(created.body.webhookSecret).toMatch(/^whsec_/);
    const shown = must(await api<Record<string, unknown>>('GET', '/v1/tenants/acme/plans/crud'), 'show').body;
    expect(shown).toMatchObject({ name: 'crud', point: 'latest', groups: [{ vms: ['db01'], onFailure: 'stop', before: [], after: [] }, { name: 'apps', onFailure: 'continue' }] });
    expect(shown).not.toHaveProperty('webhookSecret');
    expect((await api('POST', '/v1/tenants/acme/plans', plan('crud', [{ vms: ['db01'] }]))).status).toBe(409);
    const bad = [
      [plan('x1', []), /groups/],
      [plan('x2', [{ vms: ['db01'] }, { vms: ['db01'] }]), /already in group 1/],
      [plan('x3', [{ vms: ['nope'] }]), /groups\.0\.vms\.0: tenant acme has no VM nope/],
      [plan('x4', [{ vms: ['db01'], after: [{ kind: 'webhook', url: 'http://example.com/x' }] }]), /https/],
      [plan('x5', [{ vms: ['db01'], after: [{ kind: 'teleport' }] }]), /kind/],
      [plan('X 6', [{ vms: ['db01'] }]), /name/],
      [plan('x7', [{ vms: ['db01'] }], { point: 'yesterday' }), /point/],
    ] as const;
    for (const [body, msg] of bad) {
      const r = await api<{ detail: string }>('POST', '/v1/tenants/acme/plans', body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.detail).toMatch(msg);
      expect(r.body.detail).not.toMatch(/\n|at .*\.ts/);
    }
    const changed = must(await api<{ point: string }>('PUT', '/v1/tenants/acme/plans/crud', { groups: [{ vms: ['web01'] }], point: '2026-01-01T00:00:00Z' }), 'put').body;
    expect(changed.point).toBe('2026-01-01T00:00:00Z');
    const list = must(await api<{ plans: { name: string }[] }>('GET', '/v1/tenants/acme/plans'), 'list').body.plans.map((x) => x.name);
    expect(list).toContain('crud');
    expect((await api('DELETE', '/v1/tenants/acme/plans/crud')).status).toBe(204);
    expect((await api('GET', '/v1/tenants/acme/plans/crud')).status).toBe(404);
  });

  it('another tenant\'s token sees none of the plan or its runs (404); a viewer reads but changes nothing (403)', async () => {
    must(await api('POST', '/v1/tenants/acme/plans', plan('private', [{ vms: ['web01'] }])), 'create');
    const other = await p.s.tenantToken('tenant-admin', 'other');
    for (const [method, path, body] of [
      ['GET', '/v1/tenants/acme/plans', undefined], ['GET', '/v1/tenants/acme/plans/private', undefined],
      ['PUT', '/v1/tenants/acme/plans/private', { groups: [{ vms: ['web01'] }] }], ['DELETE', '/v1/tenants/acme/plans/private', undefined],
      ['POST', '/v1/tenants/acme/plans/private/runs', { mode: 'test' }], ['GET', '/v1/tenants/acme/plans/private/runs', undefined],
      ['POST', '/v1/tenants/acme/plans', plan('mine', [{ vms: ['web01'] }])],
    ] as const) {
      expect((await api(method, path, body, other)).status, `${method} ${path}`).toBe(404);
    }
    const viewer = await p.s.tenantToken('tenant-viewer', 'acme');
    expect((await api('GET', '/v1/tenants/acme/plans/private', undefined, viewer)).status).toBe(200);
    expect((await api('POST', '/v1/tenants/acme/plans/private/runs', { mode: 'test' }, viewer)).status).toBe(403);
    expect((await api('DELETE', '/v1/tenants/acme/plans/private', undefined, viewer)).status).toBe(403);
    const admin = await p.s.tenantToken('tenant-admin', 'acme');
    const run = must(await api<PlanRunReport>('POST', '/v1/tenants/acme/plans/private/runs', { mode: 'test' }, admin), 'run').body;
    const done = await p.waitRun('acme', 'private', run.id, (r) => r.state === 'completed', 2 * MinuteMs);
    for (const suffix of ['', '/report', '/report.html']) expect((await api('GET', `/v1/tenants/acme/plans/private/runs/${done.id}${suffix}`, undefined, other)).status).toBe(404);
    for (const action of ['cancel', 'approve', 'stop']) expect((await api('POST', `/v1/tenants/acme/plans/private/runs/${done.id}/${action}`, {}, other)).status).toBe(404);
    expect((await api('POST', `/v1/tenants/acme/plans/private/runs/${done.id}/stop`, {}, viewer)).status).toBe(403);
    must(await api('POST', `/v1/tenants/acme/plans/private/runs/${done.id}/stop`, {}, admin), 'stop');
    await p.waitRun('acme', 'private', run.id, (r) => r.vms.every((v) => v.state === 'stopped'), MinuteMs);
  }, 5 * MinuteMs);

  it('runs a test through every action, waits for approval, reports, and stops its VMs with one call', async () => {
    const created = must(await api<{ webhookSecret: string }>('POST', '/v1/tenants/acme/plans', plan('drill', [
      { name: 'db', vms: ['db01'], after: [{ kind: 'wait-ready', timeoutSeconds: 120 }, { kind: 'webhook', url: `${hook.url}/hook`, timeoutSeconds: 30 }] },
      { name: 'apps', vms: ['app01', 'app02'], before: [{ kind: 'delay', seconds: 1 }, { kind: 'manual', message: 'check the database' }], after: [{ kind: 'wait-ready' }] },
    ])), 'create').body;
    hookKey = Buffer.from(created.webhookSecret.slice('whsec_'.length), 'base64');
    const started = await api<PlanRunReport>('POST', '/v1/tenants/acme/plans/drill/runs', { mode: 'test' });
    expect(started.status).toBe(202);
    expect((await api('POST', '/v1/tenants/acme/plans/drill/runs', { mode: 'test' })).status).toBe(409);
    const waiting = await p.waitRun('acme', 'drill', started.body.id, (r) => r.state === 'waiting', 2 * MinuteMs);
    expect(waiting.waiting).toMatchObject({ message: 'check the database', approver: 'tenant' });
    // Group 1 is up before group 2 is asked for: the apps have no failover yet.
    expect(waiting.vms.find((v) => v.vm === 'db01')!.readyAt).not.toBeNull();
    expect(waiting.vms.filter((v) => v.vm.startsWith('app')).map((v) => v.state)).toEqual(['not started', 'not started']);
    // The webhook action: refused once (503), then 2xx; the same message id both times, signed with the plan's secret.
    const calls = hookCalls.filter((c) => c.body.run === waiting.id);
    expect(calls.length).toBe(2);
    expect(calls.every((c) => c.ok)).toBe(true);
    expect(calls[0]!.id).toBe(calls[1]!.id);
    expect(calls[1]!.body).toMatchObject({ type: 'plan-run.action', plan: 'drill', mode: 'test', group: { index: 0, name: 'db', when: 'after' } });
    expect(waiting.steps.find((s) => s.step.endsWith('after: webhook'))!.detail).toMatch(/HTTP 204 after 2 attempt/);
    // The viewer may not approve; the admin does.
    const viewer = await p.s.tenantToken('tenant-viewer', 'acme');
    expect((await api('POST', `/v1/tenants/acme/plans/drill/runs/${waiting.id}/approve`, {}, viewer)).status).toBe(403);
    must(await api('POST', `/v1/tenants/acme/plans/drill/runs/${waiting.id}/approve`, { note: 'db looks fine' }, await p.s.tenantToken('tenant-admin', 'acme')), 'approve');
    expect((await api('POST', `/v1/tenants/acme/plans/drill/runs/${waiting.id}/approve`, {})).status).toBe(409);
    const done = await p.waitRun('acme', 'drill', waiting.id, (r) => r.endedAt !== null, 2 * MinuteMs);
    expect(done.state).toBe('completed');
    expect(done.failures).toEqual([]);
    expect(done.steps.map((s) => `${s.step}:${s.status}`)).toEqual([
      'requested:done', 'cut:done', 'group 1 (db): start:done', 'group 1 (db) after: wait-ready:done', 'group 1 (db) after: webhook:done',
      'group 2 (apps) before: delay:done', 'group 2 (apps) before: manual:done', 'group 2 (apps): start:done', 'group 2 (apps) after: wait-ready:done', 'completed:done',
    ]);
    expect(done.steps.find((s) => s.step.endsWith('manual'))).toMatchObject({ detail: 'check the database — approved: db looks fine', by: 'tenant-admin:tenant-admin@acme' });
    expect(done.allReady).toBe(true);
    // Each step's start and end, and the manual step's wait, are events (the events module's outbox).
    const events = await p.s.svc.ctx.db.query<{ type: string; status: string; step: string }>(`SELECT type, data->>'status' AS status, data->>'step' AS step FROM events WHERE data->>'run' = $1 ORDER BY created_at`, [done.id]);
    expect(events.filter((e) => e.type === 'plan_run.manual_step_waiting')).toEqual([{ type: 'plan_run.manual_step_waiting', status: 'waiting', step: 'group 2 (apps) before: manual' }]);
    expect(events.filter((e) => e.type === 'plan_run.step_changed' && e.status === 'started').length).toBe(7);
    expect(events).toContainEqual({ type: 'plan_run.step_changed', step: 'completed', status: 'done' });
    // One cut at the start: every VM's point was chosen before the first group started.
    const cutEnd = Date.parse(done.steps.find((s) => s.step === 'cut')!.endedAt!);
    for (const v of done.vms) {
      expect(v.point.id).not.toBeNull();
      expect(v.rpoSeconds).toBeGreaterThanOrEqual(0);
      expect(v.rtoSeconds).toBeGreaterThan(0);
      expect(Date.parse(v.readyAt!)).toBeGreaterThan(cutEnd);
      const f = must(await api<FailoverReport>('GET', `/v1/failovers/${v.failover}`), 'failover').body;
      expect(f.point.id).toBe(v.point.id);
      expect(f.kind).toBe('test');
    }
    expect(done.rtoSeconds).toBe(Math.max(...done.vms.map((v) => v.rtoSeconds!)));
    const html = await fetch(`${p.s.svc.apiUrl}/v1/tenants/acme/plans/drill/runs/${done.id}/report.html`, { headers: { authorization: `Bearer ${(await p.s.tenantToken('tenant-viewer', 'acme'))}` } });
    expect(html.headers.get('content-type')).toMatch(/text\/html/);
    const page = await html.text();
    for (const text of ['Recovery plan drill', 'check the database', 'db01', 'app02', 'Total RTO', 'completed']) expect(page).toContain(text);
    // The screenshot the driver took at ready, per VM: in the JSON by path, in the page embedded.
    expect(done.vms.map((v) => v.screenshot?.path)).toEqual(done.vms.map((v) => `/v1/tenants/acme/failovers/${v.failover}/screenshot.png`));
    expect(page.match(/<img alt="console of \w+" src="data:image\/png;base64,iVBOR/g)?.length).toBe(3);
    // The test VMs stay up until stopped, all with one call.
    expect(done.vms.map((v) => v.state)).toEqual(['ready', 'ready', 'ready']);
    const stopped = must(await api<{ stopping: string[] }>('POST', `/v1/tenants/acme/plans/drill/runs/${done.id}/stop`, {}), 'stop').body;
    expect(stopped.stopping.sort()).toEqual(done.vms.map((v) => v.failover).sort());
    const after = await p.waitRun('acme', 'drill', done.id, (r) => r.vms.every((v) => v.state === 'stopped'), MinuteMs);
    expect(after.state).toBe('completed');
    expect(await p.s.svc.ctx.db.query(`SELECT * FROM point_pins WHERE holder LIKE 'plan-run:%' OR holder = ANY($1)`, [after.vms.map((v) => v.failover)])).toEqual([]);
  }, 5 * MinuteMs);

  it('a webhook action may reach public addresses only, unless the config allows private targets', async () => {
    must(await api('POST', '/v1/tenants/acme/plans', plan('ssrf', [{ vms: ['web01'], before: [{ kind: 'webhook', url: `${hook.url}/metadata`, timeoutSeconds: 30 }] }])), 'create');
    const before = hookCalls.length;
    p.s.svc.ctx.config.webhooks.allowPrivateTargets = false;
    try {
      const run = must(await api<PlanRunReport>('POST', '/v1/tenants/acme/plans/ssrf/runs', { mode: 'test' }), 'run').body;
      const ended = await p.waitRun('acme', 'ssrf', run.id, (r) => r.endedAt !== null, MinuteMs);
      expect(ended.state).toBe('failed');
      expect(ended.error).toMatch(/EPRIVATE: 127\.0\.0\.1 is a loopback address; this receiver may reach public addresses only/);
      expect(hookCalls.length).toBe(before);
    } finally {
      p.s.svc.ctx.config.webhooks.allowPrivateTargets = true;
    }
  }, 2 * MinuteMs);

  it('cancel while a run waits stops it and cleans up its test VMs', async () => {
    must(await api('POST', '/v1/tenants/acme/plans', plan('cancel-me', [{ vms: ['web01'] }, { vms: ['app01'], before: [{ kind: 'manual', message: 'go on?', approver: 'hoster' }] }])), 'create');
    const run = must(await api<PlanRunReport>('POST', '/v1/tenants/acme/plans/cancel-me/runs', { mode: 'test' }), 'run').body;
    const waiting = await p.waitRun('acme', 'cancel-me', run.id, (r) => r.state === 'waiting', 2 * MinuteMs);
    // Only the hoster approves this one.
    expect((await api('POST', `/v1/tenants/acme/plans/cancel-me/runs/${run.id}/approve`, {}, await p.s.tenantToken('tenant-admin', 'acme'))).status).toBe(403);
    expect(waiting.vms.find((v) => v.vm === 'web01')!.state).toBe('ready');
    must(await api('POST', `/v1/tenants/acme/plans/cancel-me/runs/${run.id}/cancel`, {}), 'cancel');
    const ended = await p.waitRun('acme', 'cancel-me', run.id, (r) => r.endedAt !== null, 2 * MinuteMs);
    expect(ended.state).toBe('cancelled');
    expect(ended.steps.at(-1)).toMatchObject({ step: 'cancelled', detail: 'its test VMs are stopped and cleaned up' });
    expect(ended.vms.map((v) => `${v.vm}:${v.state}`)).toEqual(['web01:stopped', 'app01:not started']);
    expect((await api('POST', `/v1/tenants/acme/plans/cancel-me/runs/${run.id}/cancel`, {})).status).toBe(409);
  }, 5 * MinuteMs);

  it('moves a run stranded on a failover host that never comes back to a live one, with a step and an event', async () => {
    must(await api('POST', '/v1/tenants/acme/plans', plan('stranded', [{ vms: ['app02'], before: [{ kind: 'manual', message: 'go on?', approver: 'hoster' }] }])), 'create');
    const run = must(await api<PlanRunReport>('POST', '/v1/tenants/acme/plans/stranded/runs', { mode: 'test' }), 'run').body;
    await p.waitRun('acme', 'stranded', run.id, (r) => r.state === 'waiting', 2 * MinuteMs);
    const db = p.s.svc.ctx.db;
    const hostOf = async () => (await db.query<{ host: string }>('SELECT host FROM plan_runs WHERE id = $1', [run.id]))[0]!.host;
    const live = await hostOf();
    // A host that died ten minutes ago (its heartbeat is every 5 s), holding the run.
    await db.query(`INSERT INTO failover_hosts (name, cpus, memory_mib, storage_bytes, started_at, heartbeat_at) VALUES ('ghost', 4, 4096, 0, now() - interval '1 hour', now() - interval '10 minutes')`);
    await db.query(`UPDATE plan_runs SET host = 'ghost' WHERE id = $1`, [run.id]);
    const deadline = Date.now() + 2 * MinuteMs;
    while ((await hostOf()) !== live) {
      if (Date.now() > deadline) throw new Error(`run ${run.id} still on ${await hostOf()}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    const moved = must(await api<PlanRunReport>('GET', `/v1/tenants/acme/plans/stranded/runs/${run.id}`), 'run').body;
    expect(JSON.stringify(moved.steps)).toMatch(new RegExp(`failover host ghost silent since [^"]+; the run moved to host ${live}`));
    const events = must(await api<{ events: { data: Record<string, unknown> }[] }>('GET', '/v1/tenants/acme/events?type=plan_run.step_changed'), 'events').body.events;
    expect(events.filter((e) => e.data.run === run.id && e.data.step === 'host' && e.data.status === 'moved')).toHaveLength(1);
    // It goes on from where it was on the live host.
    must(await api('POST', `/v1/tenants/acme/plans/stranded/runs/${run.id}/approve`, {}), 'approve');
    const ended = await p.waitRun('acme', 'stranded', run.id, (r) => r.endedAt !== null, 2 * MinuteMs);
    expect(ended.state).toBe('completed');
    must(await api('POST', `/v1/tenants/acme/plans/stranded/runs/${run.id}/stop`, {}), 'stop');
    await db.query(`DELETE FROM failover_hosts WHERE name = 'ghost'`);
  }, 5 * MinuteMs);

  it('a failing group stops the run under stop, and the run goes on under continue', async () => {
    // A point captured before anything was replicated: no VM has one, so the group fails at its start.
    const groups = (policy: string) => [{ vms: ['web01'], onFailure: policy }, { vms: ['app01'], onFailure: 'continue' }];
    for (const [name, policy] of [['stop-on-fail', 'stop'], ['go-on', 'continue']] as const) {
      must(await api('POST', '/v1/tenants/acme/plans', plan(name, groups(policy), { point: '2000-01-01T00:00:00Z' })), 'create');
    }
    const stopRun = must(await api<PlanRunReport>('POST', '/v1/tenants/acme/plans/stop-on-fail/runs', { mode: 'test' }), 'run').body;
    const stopped = await p.waitRun('acme', 'stop-on-fail', stopRun.id, (r) => r.endedAt !== null, MinuteMs);
    expect(stopped.state).toBe('failed');
    expect(stopped.error).toMatch(/group 1: start: 1 of 1 VM\(s\) failed: web01: point: VM web01 has no recovery point captured at or before 2000-01-01/);
    expect(stopped.steps.map((s) => s.step)).not.toContain('group 2: start');
    expect(stopped.failures.map((f) => f.what)).toEqual(expect.arrayContaining(['group 1: start', 'VM web01']));
    const goOn = must(await api<PlanRunReport>('POST', '/v1/tenants/acme/plans/go-on/runs', { mode: 'test' }), 'run').body;
    const went = await p.waitRun('acme', 'go-on', goOn.id, (r) => r.endedAt !== null, MinuteMs);
    expect(went.state).toBe('completed');
    expect(went.steps.map((s) => `${s.step}:${s.status}`)).toEqual(['requested:done', 'cut:done', 'group 1: start:failed', 'group 2: start:failed', 'completed:done']);
  }, 3 * MinuteMs);

  it('a planned run asks the agents to shut the sources down in the reverse of the start order; cancel withdraws the ask', async () => {
    must(await api('POST', '/v1/tenants/acme/plans', plan('move', [{ vms: ['db01'] }, { vms: ['app01'] }])), 'create');
    const run = must(await api<PlanRunReport>('POST', '/v1/tenants/acme/plans/move/runs', { mode: 'planned' }), 'run').body;
    expect(run.steps.map((s) => s.step)).toEqual(['requested']);
    const waiting = await p.waitRun('acme', 'move', run.id, (r) => r.steps.some((s) => s.step === 'group 2: shutdown' && s.status === 'started'), MinuteMs);
    const ids = waiting.vms.map((v) => v.failover);
    const commands = () => p.s.svc.ctx.db.query<{ vm: string; state: string; failover: string }>(`SELECT vm, state, payload->>'failover' AS failover FROM agent_commands
      WHERE kind = 'planned-failover' AND payload->>'failover' = ANY($1) ORDER BY created_at`, [ids]);
    // The last group's VM is asked first, named by the failover id the run reserved for it; the first group's waits.
    const app01 = waiting.vms.find((v) => v.vm === 'app01')!;
    let asked = await commands();
    for (let i = 0; i < 50 && asked.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      asked = await commands();
    }
    expect(asked).toEqual([{ vm: 'app01', state: 'queued', failover: app01.failover }]);
    must(await api('POST', `/v1/tenants/acme/plans/move/runs/${run.id}/cancel`, {}), 'cancel');
    const ended = await p.waitRun('acme', 'move', run.id, (r) => r.endedAt !== null, MinuteMs);
    expect(ended.state).toBe('cancelled');
    expect(await commands()).toEqual([{ vm: 'app01', state: 'cancelled', failover: app01.failover }]);
    expect(ended.vms.map((v) => v.state)).toEqual(['not started', 'not started']);
  }, 3 * MinuteMs);

  it('refuses a run of a plan that does not exist, a bad mode, and a body that is not JSON', async () => {
    expect((await api('POST', '/v1/tenants/acme/plans/nope/runs', { mode: 'test' })).status).toBe(404);
    must(await api('POST', '/v1/tenants/acme/plans', plan(`m${randomBytes(2).toString('hex')}`, [{ vms: ['web01'] }])), 'create');
    const r = await api<{ detail: string }>('POST', '/v1/tenants/acme/plans/private/runs', { mode: 'drill' });
    expect(r.status).toBe(400);
    expect(r.body.detail).toMatch(/mode/);
    expect((await api('GET', '/v1/tenants/acme/plans/private/runs/pr-zz-00000000')).status).toBe(404);
  });
});
