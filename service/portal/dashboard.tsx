/**
 * The dashboard: every VM of a tenant with health, state, last replicated, lag, pending logs and
 * bytes. The table's body refreshes itself (htmx polls the rows fragment every RefreshSeconds);
 * each refresh is one catalog query (replication/overview.ts). Without JavaScript the page is whole
 * and a reload refreshes it.
 */
import { Hono } from 'hono';
import { LifeboatError } from '../../shared/errors.js';
import { getTenant, listTenants } from '../catalog/tenants.js';
import type { ServiceContext } from '../context.js';
import type { VmOverview } from '../replication/overview.js';
import { tenantOverview } from '../replication/overview.js';
import { age, bytes, healthLabel, stateLabel, when } from './format.js';
import { Page } from './layout.js';
import type { PortalEnv } from './security.js';
import { tenantOf } from './security.js';

export const RefreshSeconds = 5;
const seg = encodeURIComponent;

export function tenantPath(tenant: string, rest = ''): string {
  return `/portal/t/${seg(tenant)}${rest}`;
}

function Rows(p: { tenant: string; vms: VmOverview[]; now: Date }) {
  return (
    <tbody id="vm-rows" hx-get={tenantPath(p.tenant, '/rows')} hx-trigger={`every ${RefreshSeconds}s`} hx-swap="outerHTML">
      {p.vms.length === 0 ? <tr><td colspan={7}>No protected VMs yet.</td></tr> : p.vms.map((v) => (
        <tr data-vm={v.name}>
          <th scope="row"><a href={tenantPath(p.tenant, `/vms/${seg(v.name)}`)}>{v.displayName ?? v.name}</a></th>
          <td><span class={`badge health-${v.health}`}>{healthLabel(v.health)}</span></td>
          <td>{stateLabel(v.state)}</td>
          <td><time datetime={v.lastAppliedAt ?? undefined}>{when(v.lastAppliedAt)}</time></td>
          <td>{age(v.lastAppliedAt, p.now)}</td>
          <td>{v.pendingLogs}</td>
          <td>{bytes(v.pendingBytes)}</td>
        </tr>
      ))}
    </tbody>
  );
}

export function dashboardRoutes(ctx: ServiceContext): Hono<PortalEnv> {
  const app = new Hono<PortalEnv>();

  app.get('/t/:tenant', async (c) => {
    const tenant = tenantOf(c);
    const session = c.get('session');
    const tenants = session.tenant === null ? (await listTenants(ctx.db)).map((t) => t.name) : undefined;
    if (tenants && !tenants.includes(tenant)) throw new LifeboatError('not_found', 'no such page');
    const now = new Date();
    const vms = await tenantOverview(ctx.db, tenant, now);
    return c.html(
      <Page title={`Protected VMs of ${tenant}`} session={session} tenant={tenant} tenants={tenants}>
        <h1>Protected VMs of {tenant}</h1>
        <p class="note">Updated every {RefreshSeconds} s while this page is open. Lag is the time since the last replicated change was applied.</p>
        <div class="table-wrap">
          <table>
            <caption class="note">Replication health as Hyper-V reports it</caption>
            <thead>
              <tr><th scope="col">VM</th><th scope="col">Health</th><th scope="col">State</th><th scope="col">Last replicated</th><th scope="col">Lag</th><th scope="col">Pending logs</th><th scope="col">Pending bytes</th></tr>
            </thead>
            <Rows tenant={tenant} vms={vms} now={now} />
          </table>
        </div>
      </Page>,
    );
  });

  // The live part: one query. For the hoster's users the tenant is not looked up again: an unknown
  // tenant's rows are none.
  app.get('/t/:tenant/rows', async (c) => {
    const tenant = tenantOf(c);
    const now = new Date();
    return c.html(<Rows tenant={tenant} vms={await tenantOverview(ctx.db, tenant, now)} now={now} />);
  });

  // Where a hoster's user lands, and where the switcher sends them.
  app.get('/switch', async (c) => {
    const wanted = c.req.query('tenant') ?? '';
    if (c.get('session').tenant !== null || !(await getTenant(ctx.db, wanted))) throw new LifeboatError('not_found', 'no such tenant');
    return c.redirect(tenantPath(wanted), 303);
  });
  return app;
}
