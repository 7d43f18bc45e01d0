/**
 * Recovery plans: the tenant's plans, one plan (its groups in order, their VMs and actions, its runs)
 * with a form to run it (test, planned, unplanned; a real run confirmed by typing the plan's name),
 * a run's live page (htmx polling its steps and VMs until it ends) with the manual step's approval,
 * cancel and stop, and the run's printable report (the API's report.html, plans/report.ts). Every
 * action calls the operation behind the API's route (plans/runs.ts), for the roles that operate.
 */
import { createHash } from 'node:crypto';
import type { Context } from 'hono';
import { Hono } from 'hono';
import { LifeboatError } from '../../shared/errors.js';
import type { PlanRow, PlanRunRow } from '../catalog/plans.js';
import { getPlan, listPlans, listRuns } from '../catalog/plans.js';
import type { ServiceContext } from '../context.js';
import type { FailoverQueues } from '../failover/queue.js';
import type { PlanAction, PlanDefinition, RunMode } from '../plans/definition.js';
import type { PlanRunReport } from '../plans/report.js';
import { planRunReport, renderReportHtml, reportScreenshots } from '../plans/report.js';
import { approveStep, cancelRun, requestRun, runOf, stopRunVms } from '../plans/runs.js';
import { isHosterRole } from '../trust/roles.js';
import type { Session } from '../users/sessions.js';
import { tenantPath } from './dashboard.js';
import { portalActor } from './failover-wizard.js';
import { failoverPath, seconds } from './failover.js';
import { when } from './format.js';
import { Page } from './layout.js';
import type { PortalEnv } from './security.js';
import { ContentSecurityPolicy, sessionMay, tenantOf } from './security.js';

export const RunProgressSeconds = 2;
const Modes: { mode: RunMode; label: string }[] = [{ mode: 'test', label: 'Test run' }, { mode: 'planned', label: 'Planned failover' }, { mode: 'unplanned', label: 'Unplanned failover' }];
const seg = encodeURIComponent;
const planPath = (tenant: string, plan: string, rest = '') => tenantPath(tenant, `/plans/${seg(plan)}${rest}`);
const runPath = (tenant: string, plan: string, run: string, rest = '') => planPath(tenant, plan, `/runs/${run}${rest}`);

function actionText(a: PlanAction): string {
  switch (a.kind) {
    case 'wait-ready': return `wait until every VM is ready (at most ${a.timeoutSeconds} s)`;
    case 'delay': return `wait ${a.seconds} s`;
    case 'webhook': return `call ${a.url}`;
    case 'manual': return `manual step (${a.approver === 'hoster' ? 'the hoster approves' : 'approved here'}): ${a.message}`;
  }
}

async function planIn(ctx: ServiceContext, c: Context<PortalEnv>): Promise<PlanRow> {
  const tenant = tenantOf(c);
  const plan = await getPlan(ctx.db, tenant, c.req.param('plan') ?? '');
  if (!plan) throw new LifeboatError('not_found', 'no such page');
  return plan;
}

async function runIn(ctx: ServiceContext, c: Context<PortalEnv>): Promise<PlanRunRow> {
  const plan = await planIn(ctx, c);
  try {
    return await runOf(ctx, plan.tenant, plan.name, c.req.param('run') ?? '');
  } catch {
    throw new LifeboatError('not_found', 'no such page');
  }
}

function RunProgress(p: { r: PlanRunReport; session: Session }) {
  const { r } = p;
  const live = r.endedAt === null;
  const operate = sessionMay(p.session, 'operate');
  const mayApprove = operate && r.waiting !== null && (r.waiting.approver === 'tenant' || isHosterRole(p.session.role));
  return (
    <div id="run-progress" {...(live ? { 'hx-get': runPath(r.tenant, r.plan, r.id, '/progress'), 'hx-trigger': `every ${RunProgressSeconds}s`, 'hx-swap': 'outerHTML' } : {})}>
      <dl class="facts">
        <dt>State</dt><dd id="run-state">{r.state}{live && r.goal !== 'completed' ? ` (asked: ${r.goal})` : ''}</dd>
        <dt>Point</dt><dd>{r.point}</dd>
        <dt>Requested</dt><dd>{when(r.requestedAt)} by {r.requestedBy}</dd>
        <dt>Ended</dt><dd>{when(r.endedAt)}</dd>
        <dt>VMs</dt><dd>{r.counts.vms}: {r.counts.ready} ready, {r.counts.failed} failed</dd>
        <dt>Total RTO</dt><dd>{seconds(r.rtoSeconds)}</dd>
        {r.error ? <><dt>Error</dt><dd>{r.error}</dd></> : null}
      </dl>
      {r.waiting ? (
        <section aria-labelledby="waiting-h" class="waiting">
          <h2 id="waiting-h">Waiting for approval: {r.waiting.name}</h2>
          <p id="waiting-message">{r.waiting.message}</p>
          {mayApprove ? (
            <form method="post" action={runPath(r.tenant, r.plan, r.id, '/approve')} class="stack">
              <input type="hidden" name="_csrf" value={p.session.csrf} />
              <label for="approve-note">Note (optional)</label>
              <input id="approve-note" name="note" maxlength={500} />
              <button type="submit" class="primary">Approve and go on</button>
            </form>
          ) : <p>{r.waiting.approver === 'hoster' ? 'The hoster\'s operators approve this step.' : 'Your role may not approve it.'}</p>}
        </section>
      ) : null}
      {operate ? (
        <div class="actions">
          {live ? <form method="post" action={runPath(r.tenant, r.plan, r.id, '/cancel')}><input type="hidden" name="_csrf" value={p.session.csrf} /><button type="submit">Cancel run</button></form> : null}
          {r.mode === 'test' && r.vms.some((v) => v.state !== 'not started' && !['stopped', 'failed', 'reverted'].includes(v.state))
            ? <form method="post" action={runPath(r.tenant, r.plan, r.id, '/stop')}><input type="hidden" name="_csrf" value={p.session.csrf} /><button type="submit">Stop the run's VMs</button></form> : null}
        </div>
      ) : null}
      <h2>Steps</h2>
      <div class="table-wrap" tabindex={0}><table>
        <thead><tr><th scope="col">#</th><th scope="col">Step</th><th scope="col">Status</th><th scope="col">Started</th><th scope="col">Took</th><th scope="col">Detail</th></tr></thead>
        <tbody>{r.steps.map((s) => (
          <tr data-step={s.step}><td>{s.index === null ? '' : s.index + 1}</td><th scope="row">{s.step}</th><td>{s.status}</td><td>{when(s.startedAt)}</td><td>{seconds(s.seconds)}</td>
            <td class="wrap">{`${s.detail ?? ''}${s.by ? ` (${s.by})` : ''}`}</td></tr>
        ))}</tbody>
      </table></div>
      <h2>VMs</h2>
      <div class="table-wrap" tabindex={0}><table>
        <thead><tr><th scope="col">VM</th><th scope="col">Group</th><th scope="col">State</th><th scope="col">RPO</th><th scope="col">RTO</th><th scope="col">Error</th></tr></thead>
        <tbody>{r.vms.map((v) => (
          <tr data-vm={v.vm}><th scope="row">{v.state === 'not started' ? v.vm : <a href={failoverPath(r.tenant, v.failover)}>{v.vm}</a>}</th><td>{v.group + 1}</td><td>{v.state}</td>
            <td>{seconds(v.rpoSeconds)}</td><td>{seconds(v.rtoSeconds)}</td><td class="wrap">{v.error ?? ''}</td></tr>
        ))}</tbody>
      </table></div>
    </div>
  );
}

export function planRoutes(ctx: ServiceContext, queues: () => FailoverQueues): Hono<PortalEnv> {
  const app = new Hono<PortalEnv>();
  const mustOperate = (s: Session) => {
    if (!sessionMay(s, 'operate')) throw new LifeboatError('forbidden', `role ${s.role} may not run recovery plans`);
  };

  app.get('/t/:tenant/plans', async (c) => {
    const tenant = tenantOf(c);
    const plans = await listPlans(ctx.db, tenant);
    return c.html(
      <Page title={`Recovery plans · ${tenant}`} session={c.get('session')} tenant={tenant}>
        <h1>Recovery plans of {tenant}</h1>
        <div class="table-wrap" tabindex={0}><table>
          <thead><tr><th scope="col">Plan</th><th scope="col">Description</th><th scope="col">Groups</th><th scope="col">VMs</th><th scope="col">Point</th></tr></thead>
          <tbody>{plans.length === 0 ? <tr><td colspan={5}>No plans yet (create them with the API or <code>lifeboat-service plan create</code>).</td></tr> : plans.map((pl) => {
            const def = pl.definition as unknown as PlanDefinition;
            return <tr data-plan={pl.name}><th scope="row"><a href={planPath(tenant, pl.name)}>{pl.name}</a></th><td class="wrap">{def.description}</td><td>{def.groups.length}</td><td>{def.groups.reduce((n, g) => n + g.vms.length, 0)}</td><td>{def.point}</td></tr>;
          })}</tbody>
        </table></div>
      </Page>,
    );
  });

  app.get('/t/:tenant/plans/:plan', async (c) => {
    const plan = await planIn(ctx, c);
    const session = c.get('session');
    const def = plan.definition as unknown as PlanDefinition;
    const runs = await listRuns(ctx.db, { tenant: plan.tenant, plan: plan.name });
    const error = c.req.query('error');
    return c.html(
      <Page title={`Plan ${plan.name} · ${plan.tenant}`} session={session} tenant={plan.tenant}>
        <p><a href={tenantPath(plan.tenant, '/plans')}>Recovery plans of {plan.tenant}</a></p>
        <h1>Plan {plan.name}</h1>
        {def.description ? <p>{def.description}</p> : null}
        <p>Point: {def.point}.</p>
        <h2>Groups, in order</h2>
        <ol>{def.groups.map((g) => (
          <li data-group={g.name ?? ''}>
            <strong>{g.name ?? 'unnamed group'}</strong>: {g.vms.join(', ')}{g.onFailure === 'continue' ? ' (a failure does not stop the run)' : ''}
            {g.before.length + g.after.length > 0 ? <ul>{[...g.before.map((a) => `before: ${actionText(a)}`), ...g.after.map((a) => `after: ${actionText(a)}`)].map((t) => <li>{t}</li>)}</ul> : null}
          </li>
        ))}</ol>
        <h2>Run</h2>
        {!sessionMay(session, 'operate') ? <p>Your role ({session.role}) may look but not run a plan.</p> : (
          <form method="post" action={planPath(plan.tenant, plan.name, '/runs')} class="stack">
            <input type="hidden" name="_csrf" value={session.csrf} />
            {error ? <p class="error" role="alert" id="run-error">{error}</p> : null}
            <fieldset>
              <legend>Mode</legend>
              {Modes.map((m) => <label class="check"><input type="radio" name="mode" value={m.mode} checked={m.mode === 'test'} /> {m.label}</label>)}
            </fieldset>
            <label for="confirm">For a planned or unplanned failover, type the plan's name to confirm</label>
            <input id="confirm" name="confirm" autocomplete="off" aria-describedby={error ? 'run-error' : undefined} />
            <button type="submit" class="primary">Run plan {plan.name}</button>
          </form>
        )}
        <h2>Runs</h2>
        <div class="table-wrap" tabindex={0}><table>
          <thead><tr><th scope="col">Run</th><th scope="col">Mode</th><th scope="col">State</th><th scope="col">Requested</th><th scope="col">Ended</th><th scope="col">Report</th></tr></thead>
          <tbody>{runs.length === 0 ? <tr><td colspan={6}>No runs yet.</td></tr> : runs.map((r) => (
            <tr data-run={r.id}><th scope="row"><a href={runPath(plan.tenant, plan.name, r.id)}>{r.id}</a></th><td>{r.mode}</td><td>{r.state}</td>
              <td>{when(new Date(r.requestedAt).toISOString())}</td><td>{r.endedAt ? when(new Date(r.endedAt).toISOString()) : '—'}</td>
              <td><a href={runPath(plan.tenant, plan.name, r.id, '/report.html')} aria-label={`Report of run ${r.id}`}>report</a></td></tr>
          ))}</tbody>
        </table></div>
      </Page>,
    );
  });

  app.post('/t/:tenant/plans/:plan/runs', async (c) => {
    const plan = await planIn(ctx, c);
    const session = c.get('session');
    mustOperate(session);
    const form = await c.req.parseBody();
    const mode = Modes.find((m) => m.mode === form.mode)?.mode;
    const again = (msg: string) => c.redirect(`${planPath(plan.tenant, plan.name)}?error=${seg(msg)}`, 303);
    if (!mode) return again('Choose the mode of the run.');
    if (mode !== 'test' && form.confirm !== plan.name) return again(`A ${mode} failover of every VM of the plan needs the plan's name typed exactly: ${plan.name}.`);
    const run = await requestRun(ctx, queues(), { tenant: plan.tenant, plan: plan.name, mode, requestedBy: portalActor(session) });
    return c.redirect(runPath(plan.tenant, plan.name, run.id), 303);
  });

  app.get('/t/:tenant/plans/:plan/runs/:run', async (c) => {
    const r = await planRunReport(ctx.db, await runIn(ctx, c));
    return c.html(
      <Page title={`Run ${r.id} of ${r.plan}`} session={c.get('session')} tenant={r.tenant}>
        <p><a href={planPath(r.tenant, r.plan)}>Plan {r.plan}</a> · <a href={runPath(r.tenant, r.plan, r.id, '/report.html')}>Printable report</a></p>
        <h1>{Modes.find((m) => m.mode === r.mode)!.label} of plan {r.plan}</h1>
        <p class="note">{r.id}. This page follows the run every {RunProgressSeconds} s until it ends.</p>
        <RunProgress r={r} session={c.get('session')} />
      </Page>,
    );
  });
  app.get('/t/:tenant/plans/:plan/runs/:run/progress', async (c) => c.html(<RunProgress r={await planRunReport(ctx.db, await runIn(ctx, c))} session={c.get('session')} />));

  // The API's printable report, self-contained: its inline style sheet is allowed by its hash alone.
  app.get('/t/:tenant/plans/:plan/runs/:run/report.html', async (c) => {
    const rep = await planRunReport(ctx.db, await runIn(ctx, c));
    const html = renderReportHtml(rep, await reportScreenshots(ctx.db, rep));
    const styles = [...html.matchAll(/<style>([\s\S]*?)<\/style>/g)].map((m) => `'sha256-${createHash('sha256').update(m[1]!).digest('base64')}'`);
    return c.html(html, 200, { 'Content-Security-Policy': ContentSecurityPolicy.replace("style-src 'self'", `style-src 'self' ${styles.join(' ')}`) });
  });

  app.post('/t/:tenant/plans/:plan/runs/:run/:action{approve|cancel|stop}', async (c) => {
    const run = await runIn(ctx, c);
    const session = c.get('session');
    mustOperate(session);
    const action = c.req.param('action');
    if (action === 'approve') {
      const form = await c.req.parseBody();
      const note = typeof form.note === 'string' && form.note.trim() ? form.note.trim().slice(0, 500) : undefined;
      await approveStep(ctx, queues(), run, { hoster: isHosterRole(session.role), who: portalActor(session) }, note);
    } else if (action === 'cancel') {
      await cancelRun(ctx, queues(), run, portalActor(session));
    } else {
      await stopRunVms(ctx, queues(), run, portalActor(session));
    }
    return c.redirect(runPath(run.tenant, run.plan, run.id), 303);
  });
  return app;
}
