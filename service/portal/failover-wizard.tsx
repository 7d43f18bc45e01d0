/**
 * The failover wizard: choose VMs, kind (test, planned, unplanned) and point (latest, latest
 * application-consistent, or one of a single VM's points); then review what would happen before
 * anything does: each NIC's addresses and where each came from (the IP plan, the API's ip-plan dry
 * run) and the admission check (the API's GET …/admission); then start, through requestFailover, the
 * operation behind the API's POST …/failovers. A real failover is confirmed by typing the VMs' names.
 * The first two steps are GET forms (nothing changes); starting is a POST with the session's token.
 */
import { randomBytes } from 'node:crypto';
import type { Context } from 'hono';
import { Hono } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { isLifeboatError, LifeboatError } from '../../shared/errors.js';
import { points } from '../api/operations.js';
import type { FailoverKind } from '../catalog/failovers.js';
import { listVms } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import type { Admission } from '../failover/admission.js';
import { admissionCheck } from '../failover/admission.js';
import { requestFailover } from '../failover/engine.js';
import type { NicPlan } from '../failover/network/mappings.js';
import type { FailoverQueues } from '../failover/queue.js';
import { planVmIp } from '../failover/seed.js';
import type { Session } from '../users/sessions.js';
import { tenantPath } from './dashboard.js';
import { bytes, when } from './format.js';
import { Page } from './layout.js';
import type { PortalEnv } from './security.js';
import { sessionMay, tenantOf } from './security.js';

const Kinds: { kind: FailoverKind; label: string; note: string }[] = [
  { kind: 'test', label: 'Test failover', note: 'a copy boots on an isolated test network; the source keeps running and replicating' },
  { kind: 'planned', label: 'Planned failover', note: 'the source is shut down, its last changes shipped, then the replica starts: no data lost' },
  { kind: 'unplanned', label: 'Unplanned failover', note: 'the source is lost: the replica starts from the chosen point' },
];
const MaxVms = 64;

/** Who started a failover from the portal, as the API writes its caller (role:subject). */
export function portalActor(s: Session): string {
  return `${s.role}:portal:${s.username}`;
}

interface Choice { vms: string[]; kind: FailoverKind | undefined; point: string }

function choiceOf(all: string[], q: { vms: string[]; kind: string | undefined; point: string | undefined }): Choice {
  const vms = [...new Set(q.vms)].filter((v) => all.includes(v)).slice(0, MaxVms);
  const kind = Kinds.find((k) => k.kind === q.kind)?.kind;
  const point = q.point && /^(latest|latest-consistent|\d{1,18})$/.test(q.point) ? q.point : 'latest';
  return { vms, kind, point };
}

interface Review { admission: Admission; plans: { vm: string; plan?: NicPlan[]; error?: string }[] }

async function review(ctx: ServiceContext, tenant: string, c: Choice): Promise<Review | undefined> {
  if (!c.kind || c.vms.length === 0) return undefined;
  const kind = c.kind;
  const admission = await admissionCheck(ctx, tenant, kind, c.vms);
  const plans = await Promise.all(c.vms.map(async (vm) => {
    try {
      return { vm, plan: await planVmIp(ctx.db, tenant, vm, kind === 'test' ? 'test' : 'production') };
    } catch (err) {
      if (!isLifeboatError(err)) throw err;
      return { vm, error: err.message };
    }
  }));
  return { admission, plans };
}

function PlanTable(p: { vm: string; plan: NicPlan[] }) {
  if (p.plan.length === 0) return <p>{p.vm} has no NICs recorded: it boots without network settings.</p>;
  return (
    <div class="table-wrap" tabindex={0}><table data-plan={p.vm}>
      <caption class="note">Network settings of {p.vm}</caption>
      <thead><tr><th scope="col">NIC</th><th scope="col">Setting</th><th scope="col">Value</th><th scope="col">Where it came from</th></tr></thead>
      <tbody>{p.plan.flatMap((n) => n.values.map((v) => (
        <tr><th scope="row">{n.mac} ({n.name})</th><td>{v.field}</td><td>{v.value}</td><td>{v.from}</td></tr>
      )))}</tbody>
    </table></div>
  );
}

function AdmissionPart(p: { a: Admission }) {
  return (
    <section aria-labelledby="admission-h">
      <h2 id="admission-h">Admission check</h2>
      <p id="admission-result" class={p.a.fits ? 'note' : 'error'} role={p.a.fits ? undefined : 'alert'}>
        {p.a.fits ? 'Every VM chosen fits the failover hosts and the hardware plan now.' : 'Not every VM chosen fits now: the failover of those would be refused.'}
      </p>
      <div class="table-wrap" tabindex={0}><table>
        <thead><tr><th scope="col">VM</th><th scope="col">vCPUs</th><th scope="col">Memory</th><th scope="col">Overlay storage</th><th scope="col">Host</th><th scope="col">Problems and warnings</th></tr></thead>
        <tbody>{p.a.vms.map((v) => (
          <tr data-admission={v.vm}><th scope="row">{v.vm}</th><td>{v.cpus}</td><td>{v.memoryMiB} MiB</td><td>{bytes(v.storageBytes)}</td><td>{v.host ?? 'does not fit'}</td>
            <td>{[...v.problems, ...v.warnings].join('; ') || 'none'}</td></tr>
        ))}</tbody>
      </table></div>
    </section>
  );
}

async function wizardPage(ctx: ServiceContext, tenant: string, session: Session, q: Choice, opts: { error?: string | undefined; started?: { vm: string; id: string }[] } = {}) {
  const all = (await listVms(ctx.db, tenant)).filter((v) => v.protected).map((v) => v.name);
  const single = q.vms.length === 1 ? q.vms[0]! : undefined;
  const pts = single ? (await points(ctx, tenant, single)).filter((p) => !p.latest).reverse() : [];
  const r = await review(ctx, tenant, q);
  const mayStart = sessionMay(session, 'operate');
  const real = q.kind !== undefined && q.kind !== 'test';
  const blocked = r ? r.plans.some((p) => p.error) : true;
  return (
    <Page title={`Failover · ${tenant}`} session={session} tenant={tenant}>
      <p><a href={tenantPath(tenant)}>All VMs of {tenant}</a> · <a href={tenantPath(tenant, '/failovers')}>Failovers</a></p>
      <h1>Fail over</h1>
      {opts.error ? <p class="error" role="alert" id="wizard-error">{opts.error}</p> : null}
      {opts.started && opts.started.length > 0 ? (
        <p role="status">Started: {opts.started.map((s) => <a href={tenantPath(tenant, `/failovers/${s.id}`)}>{s.vm} </a>)}</p>
      ) : null}
      <form method="get" action={tenantPath(tenant, '/failover')} class="stack wide">
        <fieldset>
          <legend>1. Virtual machines</legend>
          {all.length === 0 ? <p>No protected VMs.</p> : all.map((vm) => (
            <label class="check"><input type="checkbox" name="vm" value={vm} checked={q.vms.includes(vm)} /> {vm}</label>
          ))}
        </fieldset>
        <fieldset>
          <legend>2. Kind</legend>
          {Kinds.map((k) => (
            <label class="check"><input type="radio" name="kind" value={k.kind} checked={q.kind === k.kind} required /> {k.label}: <span class="note">{k.note}</span></label>
          ))}
        </fieldset>
        <fieldset>
          <legend>3. Recovery point</legend>
          <label for="point">Point</label>
          <select id="point" name="point" aria-describedby="point-note">
            <option value="latest" selected={q.point === 'latest'}>latest</option>
            <option value="latest-consistent" selected={q.point === 'latest-consistent'}>latest application-consistent</option>
            {pts.map((p) => <option value={p.id} selected={q.point === p.id}>{`point ${p.id}, ${when(p.capturedAt ?? p.createdAt)}${p.consistency === 'application' ? ', application-consistent' : ''}`}</option>)}
          </select>
          <p class="note" id="point-note">{single ? 'A planned failover always starts from the final cycle shipped after the shutdown.' : 'Choose one VM to pick one of its points.'}</p>
        </fieldset>
        <button type="submit">Check</button>
      </form>
      {r && q.kind ? (
        <>
          <h2>Network settings each NIC will get</h2>
          {r.plans.map((p) => p.error
            ? <p class="error" role="alert" data-plan-error={p.vm}>{p.vm}: {p.error}</p>
            : <PlanTable vm={p.vm} plan={p.plan!} />)}
          <AdmissionPart a={r.admission} />
          <h2>Start</h2>
          {!mayStart ? <p>Your role ({session.role}) may look but not start a failover.</p> : blocked ? <p>Fix the network settings above first.</p> : (
            <form method="post" action={tenantPath(tenant, '/failovers')} class="stack">
              <input type="hidden" name="_csrf" value={session.csrf} />
              <input type="hidden" name="key" value={randomBytes(12).toString('hex')} />
              <input type="hidden" name="kind" value={q.kind} />
              <input type="hidden" name="point" value={q.point} />
              {q.vms.map((vm) => <input type="hidden" name="vm" value={vm} />)}
              {real ? (
                <>
                  <label for="confirm">Type {q.vms.length === 1 ? 'the VM\'s name' : 'the VMs\' names, separated by commas,'} to confirm: {q.vms.join(', ')}</label>
                  <input id="confirm" name="confirm" autocomplete="off" required aria-describedby={opts.error ? 'wizard-error' : undefined} />
                </>
              ) : null}
              <button type="submit" class="primary">{`Start ${Kinds.find((k) => k.kind === q.kind)!.label.toLowerCase()} of ${q.vms.join(', ')}`}</button>
            </form>
          )}
        </>
      ) : null}
    </Page>
  );
}

export function failoverWizardRoutes(ctx: ServiceContext, queues: () => FailoverQueues): Hono<PortalEnv> {
  const app = new Hono<PortalEnv>();
  const allVms = async (tenant: string) => (await listVms(ctx.db, tenant)).filter((v) => v.protected).map((v) => v.name);
  const choice = async (c: Context<PortalEnv>, tenant: string, form?: Record<string, string | File | (string | File)[]>) => {
    const list = (v: unknown) => (Array.isArray(v) ? v : v === undefined ? [] : [v]).filter((x): x is string => typeof x === 'string');
    const raw = form ? { vms: list(form.vm ?? form['vm[]']), kind: form.kind, point: form.point } : { vms: c.req.queries('vm') ?? [], kind: c.req.query('kind'), point: c.req.query('point') };
    return choiceOf(await allVms(tenant), { vms: raw.vms, kind: typeof raw.kind === 'string' ? raw.kind : undefined, point: typeof raw.point === 'string' ? raw.point : undefined });
  };

  app.get('/t/:tenant/failover', async (c) => {
    const tenant = tenantOf(c);
    const asked = c.req.queries('vm') ?? [];
    const q = await choice(c, tenant);
    // A VM name that is not the tenant's (or not protected) is not silently dropped: it is not found.
    if (asked.some((v) => !q.vms.includes(v)) && asked.length <= MaxVms) throw new LifeboatError('not_found', 'no such page');
    return c.html(await wizardPage(ctx, tenant, c.get('session'), q));
  });

  app.post('/t/:tenant/failovers', async (c) => {
    const tenant = tenantOf(c);
    const session = c.get('session');
    const form = await c.req.parseBody({ all: true });
    const asked = (Array.isArray(form.vm) ? form.vm : [form.vm]).filter((v): v is string => typeof v === 'string');
    const q = await choice(c, tenant, form);
    if (asked.length === 0 || asked.some((v) => !q.vms.includes(v))) throw new LifeboatError('not_found', 'no such page');
    if (!sessionMay(session, 'operate')) throw new LifeboatError('forbidden', `role ${session.role} may not start failovers`);
    if (!q.kind) return c.html(await wizardPage(ctx, tenant, session, q, { error: 'Choose the kind of failover.' }), 400);
    if (q.kind !== 'test') {
      const typed = new Set(String(form.confirm ?? '').split(/[\s,]+/).filter(Boolean));
      if (typed.size !== q.vms.length || q.vms.some((v) => !typed.has(v))) {
        return c.html(await wizardPage(ctx, tenant, session, q, { error: `A real failover needs the VM names typed exactly: ${q.vms.join(', ')}.` }), 400);
      }
    }
    const key = typeof form.key === 'string' && /^[0-9a-f]{24}$/.test(form.key) ? form.key : undefined;
    const started: { vm: string; id: string }[] = [];
    for (const vm of q.vms) {
      try {
        const { failover } = await requestFailover(ctx, queues(), {
          tenant, vm, kind: q.kind, point: q.point, requestedBy: portalActor(session), idempotencyKey: key ? `portal-${key}-${vm}` : undefined,
        });
        started.push({ vm, id: failover.id });
      } catch (err) {
        if (!isLifeboatError(err) || err.code === 'not_found' || err.code === 'forbidden') throw err;
        return c.html(await wizardPage(ctx, tenant, session, q, { error: `${vm}: ${err.message}`, started }), err.status as ContentfulStatusCode);
      }
    }
    return c.redirect(tenantPath(tenant, started.length === 1 ? `/failovers/${started[0]!.id}` : '/failovers'), 303);
  });
  return app;
}
