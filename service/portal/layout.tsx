/** The page around every portal page: header with who is signed in, tenant switcher, sign-out form. */
import { raw } from 'hono/html';
import type { Child } from 'hono/jsx';
import type { Session } from '../users/sessions.js';
import { AssetPaths } from './assets.js';

// htmx without eval, inline scripts or its own inline style: the Content-Security-Policy allows none.
const HtmxConfig = JSON.stringify({ includeIndicatorStyles: false, allowEval: false, allowScriptTags: false, selfRequestsOnly: true, historyCacheSize: 0 });

export interface PageProps {
  title: string;
  session?: Session | undefined;
  /** The tenant the page shows (the switcher's current choice for the hoster's users). */
  tenant?: string | undefined;
  /** For the hoster's users: every tenant, for the switcher. */
  tenants?: string[] | undefined;
  /** Further scripts and style sheets of this page (our own origin's assets only). */
  scripts?: string[] | undefined;
  styles?: string[] | undefined;
  children?: Child;
}

export function Page(p: PageProps) {
  return (
    <>{raw('<!DOCTYPE html>')}<html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="htmx-config" content={HtmxConfig} />
        <title>{`${p.title} · lifeboat`}</title>
        <link rel="stylesheet" href={AssetPaths.css} />
        {(p.styles ?? []).map((href) => <link rel="stylesheet" href={href} />)}
        <script src={AssetPaths.htmx} defer></script>
        {(p.scripts ?? []).map((src) => <script src={src} defer></script>)}
      </head>
      <body>
        <a class="skip" href="#main">Skip to content</a>
        <header>
          <a class="brand" href="/portal">lifeboat</a>
          {p.session ? <Account session={p.session} tenant={p.tenant} tenants={p.tenants} /> : null}
        </header>
        {p.session && p.tenant ? <Sections tenant={p.tenant} /> : null}
        <main id="main">
          {p.children}
        </main>
      </body>
    </html></>
  );
}

function Account(p: { session: Session; tenant?: string | undefined; tenants?: string[] | undefined }) {
  return (
    <nav aria-label="Account">
      {p.tenants ? (
        <form method="get" action="/portal/switch" class="switcher">
          <label for="tenant-switch">Tenant</label>
          <select id="tenant-switch" name="tenant">
            {p.tenants.map((t) => <option value={t} selected={t === p.tenant}>{t}</option>)}
          </select>
          <button type="submit">Show</button>
        </form>
      ) : null}
      <span class="who">{p.session.username} ({p.session.role}{p.session.tenant ? `, ${p.session.tenant}` : ''})</span>
      <form method="post" action="/portal/sign-out">
        <input type="hidden" name="_csrf" value={p.session.csrf} />
        <button type="submit">Sign out</button>
      </form>
    </nav>
  );
}

/** The tenant's pages, under the header. */
function Sections(p: { tenant: string }) {
  const base = `/portal/t/${encodeURIComponent(p.tenant)}`;
  const links: [string, string][] = [['', 'VMs'], ['/failovers', 'Failovers'], ['/plans', 'Plans'], ['/mappings', 'Network mappings'], ['/usage', 'Usage'], ['/users', 'Users'], ['/audit', 'Audit log']];
  return <nav class="sections" aria-label="Sections">{links.map(([path, label]) => <a href={`${base}${path}`}>{label}</a>)}</nav>;
}

/** A page saying what went wrong, with nothing of the object asked for. */
export function ErrorPage(p: { title: string; message: string; session?: Session | undefined }) {
  return (
    <Page title={p.title} session={p.session}>
      <h1>{p.title}</h1>
      <p role="alert">{p.message}</p>
      <p><a href="/portal">Back to the dashboard</a></p>
    </Page>
  );
}
