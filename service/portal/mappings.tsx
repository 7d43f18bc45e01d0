/**
 * A tenant's network mappings (source subnet → DR subnet, per kind) and bulk NIC settings as CSV.
 * Mappings: the list, one added, one removed, through saveMappings (the API's PUT/POST/DELETE
 * …/network-mappings), so the whole set is validated as the API validates it and a refusal is shown
 * with what was typed. NIC settings: the CSV export, and an import (a file or pasted text) through
 * importNicCsv, which checks the whole file and applies every row or none, each bad row named by its
 * line. Changes are for the roles that administer.
 */
import { Hono } from 'hono';
import { isLifeboatError, LifeboatError } from '../../shared/errors.js';
import { exportNicCsv, importNicCsv, saveMappings } from '../api/networks.js';
import { listMappings } from '../catalog/networks.js';
import type { ServiceContext } from '../context.js';
import type { Session } from '../users/sessions.js';
import { tenantPath } from './dashboard.js';
import { Page } from './layout.js';
import type { PortalEnv } from './security.js';
import { sessionMay, tenantOf } from './security.js';

const Fields = ['kind', 'source', 'target', 'gateway', 'dns', 'search', 'network'] as const;
type Draft = Partial<Record<(typeof Fields)[number], string>>;
type ImportOutcome = { ok: string } | { error: string; lines: { line: number; message: string }[] };

async function mappingsPage(ctx: ServiceContext, tenant: string, session: Session, opts: { error?: string | undefined; draft?: Draft | undefined; imported?: ImportOutcome | undefined; csv?: string | undefined } = {}) {
  const mappings = await listMappings(ctx.db, tenant);
  const edit = sessionMay(session, 'administer');
  const base = tenantPath(tenant, '/mappings');
  const d = opts.draft ?? {};
  return (
    <Page title={`Network mappings · ${tenant}`} session={session} tenant={tenant}>
      <h1>Network mappings of {tenant}</h1>
      <p class="note">An address of the source subnet becomes the same host in the DR subnet at failover, for NICs whose settings of that kind do not say otherwise.</p>
      <div class="table-wrap" tabindex={0}><table>
        <thead><tr><th scope="col">Kind</th><th scope="col">Source</th><th scope="col">DR subnet</th><th scope="col">Gateway</th><th scope="col">DNS</th><th scope="col">Search</th><th scope="col">DR network</th>{edit ? <th scope="col">Remove</th> : null}</tr></thead>
        <tbody>{mappings.length === 0 ? <tr><td colspan={edit ? 8 : 7}>No mappings.</td></tr> : mappings.map((m) => (
          <tr data-mapping={`${m.kind} ${m.source}`}>
            <td>{m.kind}</td><th scope="row">{m.source}</th><td>{m.target}</td><td>{m.gateway ?? ''}</td><td>{m.dns.join(', ')}</td><td>{m.search.join(', ')}</td><td>{m.network ?? ''}</td>
            {edit ? (
              <td><form method="post" action={`${base}/remove`}>
                <input type="hidden" name="_csrf" value={session.csrf} /><input type="hidden" name="kind" value={m.kind} /><input type="hidden" name="source" value={m.source} />
                <button type="submit" aria-label={`Remove the ${m.kind} mapping of ${m.source}`}>Remove</button>
              </form></td>
            ) : null}
          </tr>
        ))}</tbody>
      </table></div>
      {edit ? (
        <>
          <h2>Add a mapping</h2>
          <form method="post" action={base} class="stack">
            <input type="hidden" name="_csrf" value={session.csrf} />
            {opts.error ? <p class="error" role="alert" id="mapping-error">{opts.error}</p> : null}
            <label for="m-kind">Kind</label>
            <select id="m-kind" name="kind"><option value="production" selected={d.kind !== 'test'}>failover (production)</option><option value="test" selected={d.kind === 'test'}>test failover</option></select>
            <label for="m-source">Source subnet (CIDR)</label>
            <input id="m-source" name="source" required value={d.source ?? ''} aria-describedby={opts.error ? 'mapping-error' : undefined} />
            <label for="m-target">DR subnet (CIDR, same prefix length)</label>
            <input id="m-target" name="target" required value={d.target ?? ''} />
            <label for="m-gateway">Gateway (optional)</label>
            <input id="m-gateway" name="gateway" value={d.gateway ?? ''} />
            <label for="m-dns">DNS servers (optional, separated by spaces or commas)</label>
            <input id="m-dns" name="dns" value={d.dns ?? ''} />
            <label for="m-search">Search domains (optional)</label>
            <input id="m-search" name="search" value={d.search ?? ''} />
            <label for="m-network">DR network (optional)</label>
            <input id="m-network" name="network" value={d.network ?? ''} />
            <button type="submit" class="primary">Add mapping</button>
          </form>
        </>
      ) : null}
      <h2>NIC settings as CSV</h2>
      <p><a href={`${base}/nic-settings.csv`} download="nic-settings.csv">Download every NIC's settings (CSV)</a></p>
      {edit ? (
        <form method="post" action={`${base}/import`} enctype="multipart/form-data" class="stack">
          <input type="hidden" name="_csrf" value={session.csrf} />
          {opts.imported && 'error' in opts.imported ? (
            <div class="error" role="alert" id="import-error">
              <p>{opts.imported.error}</p>
              {opts.imported.lines.length > 0 ? <ul>{opts.imported.lines.map((l) => <li data-line={l.line}>line {l.line}: {l.message}</li>)}</ul> : null}
            </div>
          ) : null}
          {opts.imported && 'ok' in opts.imported ? <p role="status" id="import-result">{opts.imported.ok}</p> : null}
          <label for="csv-file">A CSV file (vm,mac,kind,addresses,gateway,dns,network[,search,mtu,model])</label>
          <input id="csv-file" name="file" type="file" accept=".csv,text/csv" aria-describedby={opts.imported && 'error' in opts.imported ? 'import-error' : undefined} />
          <label for="csv-text">or its text</label>
          <textarea id="csv-text" name="csv" rows={6}>{opts.csv ?? ''}</textarea>
          <label class="check"><input type="checkbox" name="dryRun" value="1" /> Only check it (change nothing)</label>
          <button type="submit">Import: every row or none</button>
        </form>
      ) : null}
    </Page>
  );
}

export function mappingRoutes(ctx: ServiceContext): Hono<PortalEnv> {
  const app = new Hono<PortalEnv>();
  const mustAdminister = (s: Session) => {
    if (!sessionMay(s, 'administer')) throw new LifeboatError('forbidden', `role ${s.role} may not change network settings`);
  };
  const refusal = (err: unknown) => {
    if (isLifeboatError(err) && err.code === 'invalid_argument') return err.message;
    throw err;
  };

  app.get('/t/:tenant/mappings', async (c) => c.html(await mappingsPage(ctx, tenantOf(c), c.get('session'))));

  app.post('/t/:tenant/mappings', async (c) => {
    const tenant = tenantOf(c);
    const session = c.get('session');
    mustAdminister(session);
    const form = await c.req.parseBody();
    const draft = Object.fromEntries(Fields.map((f) => [f, typeof form[f] === 'string' ? String(form[f]).trim().slice(0, 300) : ''])) as Required<Draft>;
    const listOf = (v: string) => v.split(/[\s,]+/).filter(Boolean);
    const one = {
      kind: draft.kind, source: draft.source, target: draft.target, ...(draft.gateway ? { gateway: draft.gateway } : {}),
      dns: listOf(draft.dns), search: listOf(draft.search), ...(draft.network ? { network: draft.network } : {}),
    };
    try {
      await saveMappings(ctx, tenant, (stored) => [...stored, one]);
    } catch (err) {
      return c.html(await mappingsPage(ctx, tenant, session, { error: refusal(err), draft }), 400);
    }
    return c.redirect(tenantPath(tenant, '/mappings'), 303);
  });

  app.post('/t/:tenant/mappings/remove', async (c) => {
    const tenant = tenantOf(c);
    const session = c.get('session');
    mustAdminister(session);
    const form = await c.req.parseBody();
    let found = false;
    await saveMappings(ctx, tenant, (stored) => stored.filter((m) => {
      const hit = m.kind === form.kind && m.source === form.source;
      found ||= hit;
      return !hit;
    }));
    if (!found) throw new LifeboatError('not_found', 'no such mapping');
    return c.redirect(tenantPath(tenant, '/mappings'), 303);
  });

  app.get('/t/:tenant/mappings/nic-settings.csv', async (c) => {
    const tenant = tenantOf(c);
    return c.body(await exportNicCsv(ctx.db, tenant), 200, { 'content-type': 'text/csv; charset=utf-8', 'content-disposition': `attachment; filename="nic-settings-${tenant}.csv"` });
  });

  app.post('/t/:tenant/mappings/import', async (c) => {
    const tenant = tenantOf(c);
    const session = c.get('session');
    mustAdminister(session);
    const form = await c.req.parseBody();
    const file = form.file instanceof File && form.file.size > 0 ? await form.file.text() : undefined;
    const csv = file ?? (typeof form.csv === 'string' ? form.csv : '');
    const dryRun = form.dryRun === '1';
    const shown = file === undefined ? csv : undefined;
    let result;
    try {
      result = await importNicCsv(ctx.db, tenant, csv, dryRun);
    } catch (err) {
      return c.html(await mappingsPage(ctx, tenant, session, { imported: { error: refusal(err), lines: [] }, csv: shown }), 400);
    }
    if ('refused' in result) return c.html(await mappingsPage(ctx, tenant, session, { imported: { error: result.summary, lines: result.refused }, csv: shown }), 400);
    const ok = `${result.dryRun ? 'Checked, nothing changed' : 'Imported'}: ${result.rows} row(s), ${result.nics} NIC(s) of ${result.vms.length} VM(s)${result.vms.length ? ` (${result.vms.join(', ')})` : ''}.`;
    return c.html(await mappingsPage(ctx, tenant, session, { imported: { ok } }));
  });
  return app;
}
