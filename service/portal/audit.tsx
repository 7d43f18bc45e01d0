/**
 * A tenant's audit log, newest first, filtered by who acted, what was done and when; the rows are
 * the API's GET /v1/audit for the tenant (catalog/audit.ts), a page of PageSize at a time.
 */
import { Hono } from 'hono';
import { listAudit } from '../catalog/audit.js';
import type { ServiceContext } from '../context.js';
import { tenantPath } from './dashboard.js';
import { when } from './format.js';
import { Page } from './layout.js';
import type { PortalEnv } from './security.js';
import { tenantOf } from './security.js';

export const PageSize = 100;

function dateOf(text: string, endOfDay: boolean): Date | undefined | 'bad' {
  if (text === '') return undefined;
  if (!/^\d{4}-\d{2}-\d{2}$/.test(text)) return 'bad';
  const d = new Date(`${text}T00:00:00Z`);
  if (Number.isNaN(d.getTime())) return 'bad';
  return endOfDay ? new Date(d.getTime() + 86_400_000) : d;
}

export function auditRoutes(ctx: ServiceContext): Hono<PortalEnv> {
  const app = new Hono<PortalEnv>();
  app.get('/t/:tenant/audit', async (c) => {
    const tenant = tenantOf(c);
    const q = (name: string) => (c.req.query(name) ?? '').trim().slice(0, 200);
    const actor = q('actor');
    const action = q('action');
    const fromText = q('from');
    const toText = q('to');
    const cursor = /^\d{1,18}$/.test(q('before')) ? Number(q('before')) : undefined;
    const from = dateOf(fromText, false);
    const to = dateOf(toText, true);
    const error = from === 'bad' || to === 'bad' ? 'Dates are written 2026-12-07.' : undefined;
    // The action filter is a prefix (failover., api-key.create): applied to what the catalog returns.
    const rows = error ? [] : (await listAudit(ctx.db, { tenant, actor: actor || undefined, from: from as Date | undefined, to: to as Date | undefined, before: cursor, limit: PageSize }));
    const shown = action ? rows.filter((r) => r.action.startsWith(action)) : rows;
    const next = rows.length === PageSize ? new URLSearchParams({ actor, action, from: fromText, to: toText, before: String(rows[rows.length - 1]!.id) }).toString() : undefined;
    return c.html(
      <Page title={`Audit log · ${tenant}`} session={c.get('session')} tenant={tenant}>
        <h1>Audit log of {tenant}</h1>
        <form method="get" action={tenantPath(tenant, '/audit')} class="stack">
          {error ? <p class="error" role="alert" id="audit-error">{error}</p> : null}
          <label for="actor">Who (exactly as written in the log)</label>
          <input id="actor" name="actor" value={actor} />
          <label for="action">What (the start of the action, e.g. failover.)</label>
          <input id="action" name="action" value={action} />
          <label for="from">From (date)</label>
          <input id="from" name="from" value={fromText} placeholder="2026-12-01" aria-describedby={error ? 'audit-error' : undefined} />
          <label for="to">To (date, included)</label>
          <input id="to" name="to" value={toText} placeholder="2026-12-31" />
          <button type="submit">Filter</button>
        </form>
        <div class="table-wrap" tabindex={0}><table>
          <thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">Role</th><th scope="col">Action</th><th scope="col">Target</th><th scope="col">Result</th><th scope="col">From</th></tr></thead>
          <tbody>{shown.length === 0 ? <tr><td colspan={7}>No entries.</td></tr> : shown.map((r) => (
            <tr data-audit={r.id}><td>{when(new Date(r.at).toISOString())}</td><td>{r.actor}</td><td>{r.actorRole}</td><th scope="row">{r.action}</th><td class="wrap">{r.target}</td><td>{r.result}</td><td>{r.source ?? ''}</td></tr>
          ))}</tbody>
        </table></div>
        {next ? <p><a href={`${tenantPath(tenant, '/audit')}?${next}`}>Older entries</a></p> : null}
      </Page>,
    );
  });
  return app;
}
