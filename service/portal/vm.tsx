/**
 * The VM page: replication statistics (as Hyper-V's "View Replication Health"), disks, recovery
 * points (latest and application-consistent marked, with age) and the NICs' failover settings, with
 * a form per NIC for the roles that administer. The form posts to putNic, the operation behind the
 * API's PUT /nics/{mac}, so it is validated exactly as the API validates; a refusal is shown beside
 * the NIC with what was typed.
 */
import { Hono } from 'hono';
import { isLifeboatError, LifeboatError } from '../../shared/errors.js';
import type { NicModelName } from '../api/nics.js';
import { presentNic, putNic } from '../api/nics.js';
import { points } from '../api/operations.js';
import { listVmNics } from '../catalog/failovers.js';
import { getVm } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import type { NicConfig } from '../failover/network/settings.js';
import { normaliseMac } from '../failover/network/settings.js';
import type { VmHistory } from '../replication/history.js';
import { coarsen, vmHistory } from '../replication/history.js';
import { vmStatus } from '../replication/status.js';
import type { Session } from '../users/sessions.js';
import { tenantPath } from './dashboard.js';
import { age, bytes, healthLabel, stateLabel, when } from './format.js';
import { AssetPaths } from './assets.js';
import { Page } from './layout.js';
import type { PortalEnv } from './security.js';
import { sessionMay, tenantOf } from './security.js';

const Kinds = ['test', 'production'] as const;
type Kind = (typeof Kinds)[number];
type Nic = ReturnType<typeof presentNic>;
type Form = Record<string, string>;

/** The form's fields of one kind from a stored config. */
function fieldsOf(c: NicConfig | undefined): Form {
  if (!c) return { mode: '' };
  if (c.mode === 'dhcp') return { mode: 'dhcp', network: c.network ?? '' };
  return { mode: 'static', addresses: c.addresses.join('\n'), gateway4: c.gateway4 ?? '', gateway6: c.gateway6 ?? '', dns: c.dns.join(', '), network: c.network ?? '' };
}

/** A kind's config from the form's fields; what the form does not show (search, mtu, dhcp6) is kept from the stored one. */
function configOf(f: Form, stored: NicConfig | undefined): unknown {
  const opt = (v: string | undefined) => (v && v.trim() ? v.trim() : undefined);
  const network = opt(f.network);
  if (f.mode === 'dhcp') return { ...(stored?.mode === 'dhcp' ? stored : {}), mode: 'dhcp', network };
  if (f.mode !== 'static') return undefined;
  const kept = stored?.mode === 'static' ? { search: stored.search, mtu: stored.mtu } : {};
  return {
    ...kept, mode: 'static', network,
    addresses: (f.addresses ?? '').split(/\s+/).filter(Boolean), gateway4: opt(f.gateway4), gateway6: opt(f.gateway6), dns: (f.dns ?? '').split(/[\s,]+/).filter(Boolean),
  };
}

function NicForm(p: { tenant: string; vm: string; nic: Nic; session: Session; draft?: Record<Kind, Form> | undefined; error?: string | undefined }) {
  const id = p.nic.mac.replaceAll(':', '');
  const values = p.draft ?? { test: fieldsOf(p.nic.test), production: fieldsOf(p.nic.production) };
  return (
    <form method="post" action={tenantPath(p.tenant, `/vms/${encodeURIComponent(p.vm)}/nics/${encodeURIComponent(p.nic.mac)}`)} class="nic" id={`nic-${id}`} aria-describedby={p.error ? `nic-${id}-error` : undefined}>
      <input type="hidden" name="_csrf" value={p.session.csrf} />
      {p.error ? <p class="error" role="alert" id={`nic-${id}-error`}>{p.error}</p> : null}
      {Kinds.map((kind) => {
        const v = values[kind];
        const f = (name: string) => `${kind}-${name}-${id}`;
        return (
          <fieldset>
            <legend>{kind === 'test' ? 'Test failover' : 'Failover'}</legend>
            <label for={f('mode')}>Addressing</label>
            <select id={f('mode')} name={`${kind}.mode`}>
              <option value="" selected={!v.mode}>as at the source</option>
              <option value="dhcp" selected={v.mode === 'dhcp'}>DHCP</option>
              <option value="static" selected={v.mode === 'static'}>static</option>
            </select>
            <label for={f('addresses')}>Addresses (CIDR, one per line)</label>
            <textarea id={f('addresses')} name={`${kind}.addresses`} rows={2}>{v.addresses ?? ''}</textarea>
            <label for={f('gateway4')}>IPv4 gateway</label>
            <input id={f('gateway4')} name={`${kind}.gateway4`} value={v.gateway4 ?? ''} />
            <label for={f('gateway6')}>IPv6 gateway</label>
            <input id={f('gateway6')} name={`${kind}.gateway6`} value={v.gateway6 ?? ''} />
            <label for={f('dns')}>DNS servers</label>
            <input id={f('dns')} name={`${kind}.dns`} value={v.dns ?? ''} />
            <label for={f('network')}>DR network</label>
            <input id={f('network')} name={`${kind}.network`} value={v.network ?? ''} />
          </fieldset>
        );
      })}
      <button type="submit" class="primary">Save NIC {p.nic.mac}</button>
    </form>
  );
}

/** The last 24 hours: the chart (drawn by the history-chart asset) and the same figures by hour. */
function HistorySection(p: { history: VmHistory }) {
  const hours = coarsen(p.history, 3600);
  const hour = (t: number) => new Date(t * 1000).toISOString().slice(0, 16).replace('T', ' ');
  return (
    <section aria-labelledby="history-title">
      <h2 id="history-title">Last 24 hours</h2>
      <p class="note">Lag: the longest time a cycle's changes took to reach the replica (capture to applied). Shipped: the bytes of the logs closed in each {p.history.bucketSeconds / 60} minutes.</p>
      <div id="history-chart" class="chart" data-history={JSON.stringify(p.history)} role="img" aria-label="Replication lag and bytes shipped over the last 24 hours; the table below gives the same figures by hour"><p class="note">The chart needs JavaScript; the table below has its figures.</p></div>
      <details>
        <summary>The figures by hour</summary>
        <div class="table-wrap"><table id="history-table">
          <thead><tr><th scope="col">Hour (UTC)</th><th scope="col">Largest lag</th><th scope="col">Shipped</th></tr></thead>
          <tbody>{hours.t.map((t, i) => <tr><th scope="row">{hour(t)}</th><td>{hours.lagSeconds[i] == null ? 'no cycle' : `${hours.lagSeconds[i]} s`}</td><td>{bytes(hours.bytes[i]!)}</td></tr>)}</tbody>
        </table></div>
      </details>
    </section>
  );
}

function settingsText(c: NicConfig | undefined): string {
  if (!c) return 'as at the source';
  if (c.mode === 'dhcp') return `DHCP${c.network ? ` in ${c.network}` : ''}`;
  return `${c.addresses.join(', ')}${c.gateway4 ? ` via ${c.gateway4}` : ''}${c.network ? ` in ${c.network}` : ''}`;
}

async function vmPage(ctx: ServiceContext, tenant: string, name: string, session: Session, edit?: { mac: string; draft: Record<Kind, Form>; error: string }) {
  const vm = await getVm(ctx.db, tenant, name);
  if (!vm) throw new LifeboatError('not_found', 'no such page');
  const now = new Date();
  const [status, pts, nics, history] = await Promise.all([vmStatus(ctx.db, vm, now), points(ctx, tenant, name), listVmNics(ctx.db, tenant, name), vmHistory(ctx.db, tenant, name, { now })]);
  const mayEdit = sessionMay(session, 'administer');
  return (
    <Page title={`${vm.displayName ?? vm.name} · ${tenant}`} session={session} tenant={tenant} scripts={[AssetPaths.uplot, AssetPaths.historyChart]} styles={[AssetPaths.uplotCss]}>
      <p><a href={tenantPath(tenant)}>All VMs of {tenant}</a></p>
      <h1>{vm.displayName ?? vm.name}</h1>
      {sessionMay(session, 'operate') ? <p><a href={`${tenantPath(tenant, '/failover')}?vm=${encodeURIComponent(name)}&kind=test`}>Test failover</a> · <a href={`${tenantPath(tenant, '/failover')}?vm=${encodeURIComponent(name)}`}>Failover</a> · <a href={tenantPath(tenant, '/failovers')}>Failovers</a></p> : null}
      <h2>Replication health</h2>
      <dl class="facts">
        <dt>Health</dt><dd><span class={`badge health-${status.health}`}>{healthLabel(status.health)}</span></dd>
        <dt>State</dt><dd>{stateLabel(status.state)}</dd>
        <dt>Last replicated</dt><dd>{when(status.lastAppliedAt)} ({age(status.lastAppliedAt, now)} ago)</dd>
        <dt>Frequency</dt><dd>{status.frequency}</dd>
        <dt>Cycles in the last hour</dt><dd>{status.cycles.successful} successful, {status.cycles.missed} missed of {status.cycles.expected}</dd>
        <dt>Log size (last hour)</dt><dd>average {bytes(status.logBytes.average)}, largest {bytes(status.logBytes.largest)}</dd>
        <dt>Pending</dt><dd>{status.pendingLogs} logs, {bytes(status.pendingBytes)}</dd>
        <dt>Last error</dt><dd>{status.lastError ?? 'none'}</dd>
      </dl>
      <HistorySection history={history} />
      <h2>Disks</h2>
      <div class="table-wrap"><table>
        <thead><tr><th scope="col">Disk</th><th scope="col">Size</th><th scope="col">State</th><th scope="col">Last applied</th><th scope="col">Pending</th></tr></thead>
        <tbody>{status.disks.map((d) => <tr><th scope="row">{d.id}</th><td>{bytes(d.virtualSize)}</td><td>{stateLabel(d.state)}</td><td>{when(d.lastAppliedAt)}</td><td>{d.pendingLogs} logs, {bytes(d.pendingBytes)}</td></tr>)}</tbody>
      </table></div>
      <h2>Recovery points</h2>
      <div class="table-wrap"><table>
        <thead><tr><th scope="col">Point</th><th scope="col">Taken</th><th scope="col">Age</th><th scope="col">Consistency</th></tr></thead>
        <tbody>{[...pts].reverse().map((p) => (
          <tr data-point={p.id}><th scope="row">{p.latest ? 'Latest' : p.id}</th><td>{when(p.capturedAt ?? p.createdAt)}</td><td>{age(p.capturedAt ?? p.createdAt, now)}</td>
            <td>{p.consistency === 'application' ? <strong>application-consistent</strong> : 'crash-consistent'}</td></tr>
        ))}</tbody>
      </table></div>
      <h2>Network adapters</h2>
      {nics.length === 0 ? <p>No NICs recorded.</p> : nics.map(presentNic).map((n) => (
        <section aria-label={`NIC ${n.mac}`} class="nic-section">
          <h3>NIC {n.mac} ({n.model})</h3>
          <p>At the source: {n.reportedAddresses.length > 0 ? n.reportedAddresses.join(', ') : 'no addresses recorded'}. Test failover: {settingsText(n.test)}. Failover: {settingsText(n.production)}.</p>
          {mayEdit ? <NicForm tenant={tenant} vm={name} nic={n} session={session} draft={edit?.mac === n.mac ? edit.draft : undefined} error={edit?.mac === n.mac ? edit.error : undefined} /> : null}
        </section>
      ))}
    </Page>
  );
}

export function vmRoutes(ctx: ServiceContext): Hono<PortalEnv> {
  const app = new Hono<PortalEnv>();
  app.get('/t/:tenant/vms/:vm', async (c) => c.html(await vmPage(ctx, tenantOf(c), c.req.param('vm'), c.get('session'))));

  app.post('/t/:tenant/vms/:vm/nics/:mac', async (c) => {
    const tenant = tenantOf(c);
    const session = c.get('session');
    const name = c.req.param('vm');
    if (!(await getVm(ctx.db, tenant, name))) throw new LifeboatError('not_found', 'no such page');
    if (!sessionMay(session, 'administer')) throw new LifeboatError('forbidden', `role ${session.role} may not change NIC settings`);
    const m = normaliseMac(c.req.param('mac'));
    const stored = m.ok ? (await listVmNics(ctx.db, tenant, name)).map(presentNic).find((n) => n.mac === m.mac) : undefined;
    if (!stored) throw new LifeboatError('not_found', 'no such page');
    const form = await c.req.parseBody();
    const draft = Object.fromEntries(Kinds.map((kind) => [kind, Object.fromEntries(['mode', 'addresses', 'gateway4', 'gateway6', 'dns', 'network']
      .map((f) => [f, typeof form[`${kind}.${f}`] === 'string' ? String(form[`${kind}.${f}`]).slice(0, 2000) : ''])) as Form])) as Record<Kind, Form>;
    try {
      await putNic(ctx, tenant, name, stored.mac, {
        model: stored.model as NicModelName, reportedAddresses: stored.reportedAddresses,
        production: configOf(draft.production, stored.production), test: configOf(draft.test, stored.test),
      });
    } catch (err) {
      if (!isLifeboatError(err) || err.code !== 'invalid_argument') throw err;
      return c.html(await vmPage(ctx, tenant, name, session, { mac: stored.mac, draft, error: err.message }), 400);
    }
    return c.redirect(`${tenantPath(tenant, `/vms/${encodeURIComponent(name)}`)}#nic-${stored.mac.replaceAll(':', '')}`, 303);
  });
  return app;
}
