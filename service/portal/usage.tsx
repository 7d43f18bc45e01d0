/**
 * A tenant's metered usage: a table per UTC day of the range (default: this month so far) with the
 * month's total, and the same as a CSV download; the meter and the CSV are the API's GET /v1/usage
 * (usage/report.ts).
 */
import type { Context } from 'hono';
import { Hono } from 'hono';
import { isLifeboatError } from '../../shared/errors.js';
import type { ServiceContext } from '../context.js';
import type { UsageRange } from '../usage/report.js';
import { parseRange, Units, usageCsv, usageDays, usageReport } from '../usage/report.js';
import { tenantPath } from './dashboard.js';
import { Page } from './layout.js';
import type { PortalEnv } from './security.js';
import { tenantOf } from './security.js';

const Fields = Object.keys(Units) as (keyof typeof Units)[];
const Short: Record<keyof typeof Units, string> = {
  protectedVmHours: 'Protected VM-h', replicaGbHours: 'Replica GB-h', bytesReceived: 'Bytes received', testFailoverVmHours: 'Test failover VM-h',
  failoverVmHours: 'Failover VM-h', vcpuHours: 'vCPU-h', memoryGibHours: 'Memory GiB-h', windowsVmHours: 'Windows VM-h', publicIpHours: 'Public IP-h', planRuns: 'Plan runs',
};

function rangeOf(c: Context<PortalEnv>, tenant: string, now: Date): { range?: UsageRange; error?: string; from: string; to: string } {
  const from = (c.req.query('from') ?? '').slice(0, 40);
  const to = (c.req.query('to') ?? '').slice(0, 40);
  try {
    return { range: parseRange({ from: from || undefined, to: to || undefined, tenant }, now), from, to };
  } catch (err) {
    if (!isLifeboatError(err)) throw err;
    return { error: err.message, from, to };
  }
}

const fmt = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(3));

export function usageRoutes(ctx: ServiceContext, now: () => Date = () => new Date()): Hono<PortalEnv> {
  const app = new Hono<PortalEnv>();
  app.get('/t/:tenant/usage', async (c) => {
    const tenant = tenantOf(c);
    const at = now();
    const r = rangeOf(c, tenant, at);
    const report = r.range ? await usageReport(ctx.db, r.range, at) : undefined;
    const mine = report?.tenants.find((t) => t.tenant === tenant);
    const query = new URLSearchParams({ ...(r.from ? { from: r.from } : {}), ...(r.to ? { to: r.to } : {}) }).toString();
    return c.html(
      <Page title={`Usage · ${tenant}`} session={c.get('session')} tenant={tenant}>
        <h1>Usage of {tenant}</h1>
        <form method="get" action={tenantPath(tenant, '/usage')} class="stack">
          {r.error ? <p class="error" role="alert" id="usage-error">{r.error}</p> : null}
          <label for="from">From (a date, or empty for the first of this month)</label>
          <input id="from" name="from" value={r.from} placeholder="2026-12-01" aria-describedby={r.error ? 'usage-error' : undefined} />
          <label for="to">To (empty for now)</label>
          <input id="to" name="to" value={r.to} placeholder="2026-12-31" />
          <button type="submit">Show</button>
        </form>
        {report ? (
          <>
            <p><a href={`${tenantPath(tenant, '/usage.csv')}${query ? `?${query}` : ''}`} download="usage.csv">Download as CSV</a> · {report.from.slice(0, 10)} to {report.until.slice(0, 16).replace('T', ' ')} UTC</p>
            <div class="table-wrap" tabindex={0}><table>
              <caption class="note">Per UTC day; units below the table</caption>
              <thead><tr><th scope="col">Day</th>{Fields.map((f) => <th scope="col">{Short[f]}</th>)}</tr></thead>
              <tbody>
                {!mine || mine.days.length === 0 ? <tr><td colspan={Fields.length + 1}>No usage in this range.</td></tr> : mine.days.map((d) => (
                  <tr data-day={d.day}><th scope="row">{d.day}</th>{Fields.map((f) => <td>{fmt(d[f])}</td>)}</tr>
                ))}
                {mine ? <tr data-day="total"><th scope="row">Total</th>{Fields.map((f) => <td><strong>{fmt(mine.total[f])}</strong></td>)}</tr> : null}
              </tbody>
            </table></div>
            <dl class="facts">{Fields.map((f) => <><dt>{Short[f]}</dt><dd>{Units[f]}</dd></>)}</dl>
          </>
        ) : null}
      </Page>,
    );
  });
  app.get('/t/:tenant/usage.csv', async (c) => {
    const tenant = tenantOf(c);
    const at = now();
    const r = rangeOf(c, tenant, at);
    if (!r.range) return c.text(`${r.error}\n`, 400);
    return c.body(usageCsv(await usageDays(ctx.db, r.range, at)), 200, { 'content-type': 'text/csv; charset=utf-8', 'content-disposition': `attachment; filename="usage-${tenant}.csv"` });
  });
  return app;
}
