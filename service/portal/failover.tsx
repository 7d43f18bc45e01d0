/**
 * A tenant's failovers: the list, and one failover's live progress page (its steps, the console
 * screenshot once ready, the result), refreshed by htmx every ProgressSeconds until it ends, with the
 * actions its kind and state allow (stop a test failover; commit or revert a real one) for the roles
 * that operate. The actions call changeGoal, the operation behind the API's POST …/failovers/{id}/{action};
 * "Fail back" on a committed real failover calls requestFailback, the operation behind POST
 * /v1/failovers/{id}/failback (docs/failback.md).
 */
import type { Context } from 'hono';
import { Hono } from 'hono';
import { LifeboatError } from '../../shared/errors.js';
import type { FailoverRow } from '../catalog/failovers.js';
import { getFailover, latestScreenshot, listFailovers } from '../catalog/failovers.js';
import type { ServiceContext } from '../context.js';
import { DefaultShutdownTimeoutSeconds, requestFailback } from '../failback/request.js';
import { changeGoal } from '../failover/engine.js';
import type { FailoverQueues } from '../failover/queue.js';
import type { FailoverReport } from '../failover/report.js';
import { failoverReport } from '../failover/report.js';
import type { Session } from '../users/sessions.js';
import { tenantPath } from './dashboard.js';
import { portalActor } from './failover-wizard.js';
import { when } from './format.js';
import { Page } from './layout.js';
import type { PortalEnv } from './security.js';
import { sessionMay, tenantOf } from './security.js';

export const ProgressSeconds = 2;
const Live = new Set(['requested', 'preparing', 'booting', 'ready', 'running', 'committing', 'committed']);
const Actions = { stop: 'stopped', commit: 'committed', revert: 'reverted' } as const;
type Action = keyof typeof Actions;

export function failoverPath(tenant: string, id: string, rest = ''): string {
  return tenantPath(tenant, `/failovers/${id}${rest}`);
}

export function kindLabel(kind: FailoverRow['kind']): string {
  return kind === 'test' ? 'Test failover' : kind === 'planned' ? 'Planned failover' : 'Unplanned failover';
}

export function seconds(s: number | null): string {
  return s === null ? '—' : `${s} s`;
}

/** The actions a failover allows now, as changeGoal would accept them. */
function actionsOf(r: FailoverReport): Action[] {
  if (r.endedAt !== null || !Live.has(r.state)) return [];
  if (r.kind === 'test') return r.goal === 'stopped' ? [] : ['stop'];
  const out: Action[] = [];
  if (r.goal !== 'committed' && r.goal !== 'reverted') out.push('commit');
  if (r.goal !== 'reverted' && r.state !== 'committed' && r.state !== 'committing') out.push('revert');
  return out;
}

/** The failover a URL names when it is the tenant's; anything else is not found. */
export async function failoverIn(ctx: ServiceContext, c: Context<PortalEnv>): Promise<FailoverRow> {
  const tenant = tenantOf(c);
  const id = c.req.param('id') ?? '';
  const f = /^fo-[a-z0-9-]{1,40}$/.test(id) ? await getFailover(ctx.db, id) : undefined;
  if (!f || f.tenant !== tenant) throw new LifeboatError('not_found', 'no such page');
  return f;
}

export function Steps(p: { r: FailoverReport }) {
  return (
    <div class="table-wrap" tabindex={0}><table>
      <caption class="note">Steps</caption>
      <thead><tr><th scope="col">Step</th><th scope="col">Status</th><th scope="col">Started</th><th scope="col">Took</th><th scope="col">Detail</th></tr></thead>
      <tbody>{p.r.steps.map((s) => (
        <tr data-step={s.step}><th scope="row">{s.step}</th><td>{s.status}</td><td>{when(s.startedAt)}</td><td>{seconds(s.seconds)}</td><td class="wrap">{s.detail ?? s.cause ?? ''}</td></tr>
      ))}</tbody>
    </table></div>
  );
}

function Progress(p: { r: FailoverReport; session: Session }) {
  const { r } = p;
  const ended = r.endedAt !== null;
  const actions = sessionMay(p.session, 'operate') ? actionsOf(r) : [];
  return (
    <div id="progress" {...(ended ? {} : { 'hx-get': failoverPath(r.tenant, r.id, '/progress'), 'hx-trigger': `every ${ProgressSeconds}s`, 'hx-swap': 'outerHTML' })}>
      <dl class="facts">
        <dt>State</dt><dd id="failover-state">{r.state}{r.goal !== 'ready' && !ended ? ` (asked: ${r.goal})` : ''}</dd>
        <dt>Result</dt><dd id="failover-result">{r.result}</dd>
        <dt>Host</dt><dd>{r.host ?? '—'}</dd>
        <dt>Point</dt><dd>{r.point.requested}{r.point.id !== null ? ` (point ${r.point.id})` : ''}{r.point.capturedAt ? `, captured ${when(r.point.capturedAt)}` : ''}</dd>
        <dt>Requested</dt><dd>{when(r.requestedAt)}</dd>
        <dt>Ready</dt><dd>{when(r.readyAt)}</dd>
        <dt>Ended</dt><dd>{when(r.endedAt)}</dd>
        {r.expiresAt && !ended ? <><dt>Stops by itself at</dt><dd>{when(r.expiresAt)}</dd></> : null}
        {r.error ? <><dt>Error</dt><dd class="error">{r.error}</dd></> : null}
      </dl>
      {actions.length > 0 ? (
        <div class="actions">{actions.map((a) => (
          <form method="post" action={failoverPath(r.tenant, r.id, `/${a}`)}>
            <input type="hidden" name="_csrf" value={p.session.csrf} />
            <button type="submit" class={a === 'commit' ? 'primary' : undefined}>{a === 'stop' ? 'Stop test failover' : a === 'commit' ? 'Commit failover' : 'Revert failover'}</button>
          </form>
        ))}</div>
      ) : null}
      {sessionMay(p.session, 'operate') && r.kind !== 'test' && r.state === 'committed' && !ended ? (
        <form method="post" action={failoverPath(r.tenant, r.id, '/failback')} class="actions">
          <input type="hidden" name="_csrf" value={p.session.csrf} />
          <button type="submit">Fail back</button>
          <span class="note"> Stops {r.vm} here, ships its last writes home, checks both disks are equal, starts it at home.</span>
        </form>
      ) : null}
      <Steps r={r} />
      {r.warnings.length > 0 ? <><h2>Warnings</h2><ul>{r.warnings.map((w) => <li>{w}</li>)}</ul></> : null}
      {r.screenshot ? (
        <figure>
          <img src={failoverPath(r.tenant, r.id, '/screenshot.png')} alt={`Console of ${r.vm} at ${when(r.screenshot.takenAt)}`} class="shot" />
          <figcaption class="note">Console at {when(r.screenshot.takenAt)}</figcaption>
        </figure>
      ) : null}
    </div>
  );
}

export function failoverRoutes(ctx: ServiceContext, queues: () => FailoverQueues): Hono<PortalEnv> {
  const app = new Hono<PortalEnv>();
  const report = async (f: FailoverRow) => failoverReport(ctx.db, f, failoverPath(f.tenant, f.id, '/screenshot.png'));

  app.get('/t/:tenant/failovers', async (c) => {
    const tenant = tenantOf(c);
    const list = (await listFailovers(ctx.db, { tenant })).sort((a, b) => new Date(b.requestedAt).getTime() - new Date(a.requestedAt).getTime());
    return c.html(
      <Page title={`Failovers · ${tenant}`} session={c.get('session')} tenant={tenant}>
        <p><a href={tenantPath(tenant)}>All VMs of {tenant}</a></p>
        <h1>Failovers of {tenant}</h1>
        {sessionMay(c.get('session'), 'operate') ? <p><a href={tenantPath(tenant, '/failover')}>Start a failover</a></p> : null}
        <div class="table-wrap" tabindex={0}><table>
          <thead><tr><th scope="col">Failover</th><th scope="col">VM</th><th scope="col">Kind</th><th scope="col">State</th><th scope="col">Requested</th><th scope="col">Ended</th><th scope="col">Report</th></tr></thead>
          <tbody>{list.length === 0 ? <tr><td colspan={7}>No failovers yet.</td></tr> : list.map((f) => (
            <tr data-failover={f.id}><th scope="row"><a href={failoverPath(tenant, f.id)}>{f.id}</a></th><td>{f.vm}</td><td>{kindLabel(f.kind)}</td><td>{f.state}</td>
              <td>{when(new Date(f.requestedAt).toISOString())}</td><td>{f.endedAt ? when(new Date(f.endedAt).toISOString()) : '—'}</td>
              <td><a href={failoverPath(tenant, f.id, '/report')} aria-label={`Drill report of ${f.id}`}>report</a></td></tr>
          ))}</tbody>
        </table></div>
      </Page>,
    );
  });

  app.get('/t/:tenant/failovers/:id', async (c) => {
    const r = await report(await failoverIn(ctx, c));
    const session = c.get('session');
    return c.html(
      <Page title={`${kindLabel(r.kind)} of ${r.vm}`} session={session} tenant={r.tenant}>
        <p><a href={tenantPath(r.tenant, '/failovers')}>Failovers of {r.tenant}</a> · <a href={tenantPath(r.tenant, `/vms/${encodeURIComponent(r.vm)}`)}>{r.vm}</a> · <a href={failoverPath(r.tenant, r.id, '/report')}>Drill report</a></p>
        <h1>{kindLabel(r.kind)} of {r.vm}</h1>
        <p class="note">{r.id}. This page follows the failover every {ProgressSeconds} s until it ends.</p>
        <Progress r={r} session={session} />
      </Page>,
    );
  });

  // The live part: the progress fragment, which stops polling once the failover has ended.
  app.get('/t/:tenant/failovers/:id/progress', async (c) => c.html(<Progress r={await report(await failoverIn(ctx, c))} session={c.get('session')} />));

  app.get('/t/:tenant/failovers/:id/screenshot.png', async (c) => {
    const shot = await latestScreenshot(ctx.db, (await failoverIn(ctx, c)).id);
    if (!shot) throw new LifeboatError('not_found', 'no such page');
    return c.body(new Uint8Array(shot.png), 200, { 'content-type': 'image/png', 'cache-control': 'private, no-store' });
  });

  app.post('/t/:tenant/failovers/:id/failback', async (c) => {
    const f = await failoverIn(ctx, c);
    const session = c.get('session');
    if (!sessionMay(session, 'operate')) throw new LifeboatError('forbidden', `role ${session.role} may not fail back failovers`);
    await requestFailback(ctx, queues(), { tenant: f.tenant, failoverId: f.id, shutdownTimeoutSeconds: DefaultShutdownTimeoutSeconds, requestedBy: portalActor(session) });
    return c.redirect(failoverPath(f.tenant, f.id), 303);
  });

  app.post('/t/:tenant/failovers/:id/:action{stop|commit|revert}', async (c) => {
    const f = await failoverIn(ctx, c);
    const session = c.get('session');
    if (!sessionMay(session, 'operate')) throw new LifeboatError('forbidden', `role ${session.role} may not stop, commit or revert failovers`);
    await changeGoal(ctx, queues(), f.tenant, f.id, Actions[c.req.param('action') as Action], portalActor(session));
    return c.redirect(failoverPath(f.tenant, f.id), 303);
  });
  return app;
}
