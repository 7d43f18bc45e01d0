/**
 * A failover's drill report, printable: the VM, kind, host and point, RPO and RTO, each step with its
 * time, the console screenshot taken at ready, and for each NIC the intent (the IP plan, each value
 * with its origin) beside what the guest reported (the read-back comparison); warnings and the
 * result. The same report as the API's GET …/failovers/{id} (failover/report.ts).
 */
import { Hono } from 'hono';
import type { ServiceContext } from '../context.js';
import type { NicPlan } from '../failover/network/mappings.js';
import type { Comparison } from '../failover/network/readback.js';
import { failoverReport } from '../failover/report.js';
import { tenantPath } from './dashboard.js';
import { failoverIn, failoverPath, kindLabel, seconds, Steps } from './failover.js';
import { when } from './format.js';
import { Page } from './layout.js';
import type { PortalEnv } from './security.js';

interface Network { plan?: NicPlan[]; source?: string | null; comparison?: Comparison | null }

function NetworkPart(p: { network: Network | null }) {
  const plan = p.network?.plan ?? [];
  if (plan.length === 0) return <p id="network-none">No network plan was recorded (the failover did not reach its network step, or the VM has no NICs).</p>;
  const cmp = p.network?.comparison ?? null;
  return (
    <>
      <p id="network-verdict">{cmp === null ? 'The guest reported nothing of its network: unverified.' : cmp.ok ? `As planned (read from the ${p.network?.source ?? 'guest'}).` : `${cmp.differences.length} difference(s) from the plan (read from the ${p.network?.source ?? 'guest'}).`}</p>
      <div class="table-wrap" tabindex={0}><table>
        <thead><tr><th scope="col">NIC</th><th scope="col">Intent</th><th scope="col">Came from</th><th scope="col">Result</th></tr></thead>
        <tbody>{plan.map((n) => {
          const seen = cmp?.nics.find((x) => x.mac === n.mac);
          const result = seen === undefined ? 'not reported' : seen.differences.length > 0 ? seen.differences.map((d) => d.detail).join('; ')
            : `as planned${seen.observed ? `: ${seen.observed.addresses.join(', ')}` : ''}`;
          return (
            <tr data-nic={n.mac}><th scope="row">{n.mac} ({n.name})</th>
              <td class="wrap">{n.values.map((v) => `${v.field} ${v.value}`).join('; ')}</td>
              <td class="wrap">{[...new Set(n.values.map((v) => v.from))].join('; ')}</td>
              <td class="wrap">{result}</td></tr>
          );
        })}</tbody>
      </table></div>
    </>
  );
}

export function drillReportRoutes(ctx: ServiceContext): Hono<PortalEnv> {
  const app = new Hono<PortalEnv>();
  app.get('/t/:tenant/failovers/:id/report', async (c) => {
    const f = await failoverIn(ctx, c);
    const r = await failoverReport(ctx.db, f, failoverPath(f.tenant, f.id, '/screenshot.png'));
    return c.html(
      <Page title={`Drill report ${r.id}`} session={c.get('session')} tenant={r.tenant}>
        <p class="no-print"><a href={tenantPath(r.tenant, '/failovers')}>Failovers of {r.tenant}</a> · <a href={failoverPath(r.tenant, r.id)}>Progress page</a></p>
        <h1>Drill report: {kindLabel(r.kind).toLowerCase()} of {r.vm}</h1>
        <dl class="facts">
          <dt>Failover</dt><dd>{r.id}</dd>
          <dt>Tenant</dt><dd>{r.tenant}</dd>
          <dt>Result</dt><dd id="report-result">{r.result}</dd>
          <dt>Host</dt><dd>{r.host ?? '—'}</dd>
          <dt>Point</dt><dd>{r.point.requested}{r.point.id !== null ? ` (point ${r.point.id})` : ''}{r.point.capturedAt ? `, captured ${when(r.point.capturedAt)}` : ''}</dd>
          <dt>RPO</dt><dd id="report-rpo">{seconds(r.rpoSeconds)}</dd>
          <dt>RTO</dt><dd id="report-rto">{seconds(r.rtoSeconds)}</dd>
          <dt>Requested</dt><dd>{when(r.requestedAt)}</dd>
          <dt>Ready</dt><dd>{when(r.readyAt)}</dd>
          <dt>Ended</dt><dd>{when(r.endedAt)}</dd>
          {r.error ? <><dt>Error</dt><dd>{r.error}</dd></> : null}
        </dl>
        <h2>Steps</h2>
        <Steps r={r} />
        <h2>Network: intent and result</h2>
        <NetworkPart network={r.network as Network | null} />
        {r.publicIps.length > 0 ? (
          <>
            <h2>Public addresses</h2>
            <ul>{r.publicIps.map((p) => <li>{p.address} → {p.drAddress}, applied {when(p.appliedAt)}, removed {when(p.removedAt)}</li>)}</ul>
          </>
        ) : null}
        <h2>Warnings</h2>
        {r.warnings.length > 0 ? <ul>{r.warnings.map((w) => <li>{w}</li>)}</ul> : <p>None.</p>}
        <h2>Console at ready</h2>
        {r.screenshot ? <img src={failoverPath(r.tenant, r.id, '/screenshot.png')} alt={`Console of ${r.vm} at ${when(r.screenshot.takenAt)}`} class="shot" /> : <p>No screenshot was taken.</p>}
      </Page>,
    );
  });
  return app;
}
