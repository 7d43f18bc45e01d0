/**
 * The failover wizard, progress page and drill report in real Chromium against a real failover: the
 * service's failover host runs the webhook driver, its orchestrator a loopback HTTP server checking
 * every signature (test/plans/plan-harness.ts), VMs protected and replicated by the agent. A test
 * failover from the wizard to ready and stopped; a real one refused without the typed name, then
 * started and reverted; a viewer's forged posts 403; another tenant's user 404 on every URL. A
 * recovery plan run from its page as a test, its manual step approved there, its VMs stopped, its
 * printable report; the same refusals.
 */
import type { Browser, Page } from 'playwright-core';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUser } from '../../service/api/users.js';
import type { UserRole } from '../../service/catalog/users.js';
import { listFailovers } from '../../service/catalog/failovers.js';
import { must } from '../failover/failover-harness.js';
import { PlanScenario } from '../plans/plan-harness.js';
import { chromiumPath, expectAccessible, Password, screenshot, signIn } from './harness.js';

const MinuteMs = 60_000;
let p: PlanScenario;
let browser: Browser;
let users = 0;
const url = (path: string) => `${p.s.svc.apiUrl}${path}`;
const world = { url };

async function user(role: UserRole, tenant: string): Promise<string> {
  const username = `${role}.${tenant}.${++users}@example.com`;
  await createUser(p.s.svc.ctx, { username, role, tenant, password: Password });
  return username;
}

async function signedIn(role: UserRole, tenant = 'acme'): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await signIn(page, world, await user(role, tenant));
  return page;
}

const csrfOf = (page: Page) => page.locator('input[name="_csrf"]').first().inputValue();

beforeAll(async () => {
  const executablePath = await chromiumPath();
  if (!executablePath) throw new Error('Chromium is needed for the portal tests: apt-get install -y chromium (.ci/run installs it)');
  p = await PlanScenario.start();
  await p.vms(['web01', 'db01']);
  must(await p.s.api('POST', '/v1/tenants', { name: 'globex' }), 'globex');
  must(await p.s.api('PUT', '/v1/tenants/acme/vms/web01/nics', {
    nics: [{ mac: '52:54:00:aa:00:01', reportedAddresses: ['192.168.1.10/24'], test: { mode: 'static', addresses: ['10.9.0.5/24'], gateway4: '10.9.0.1' } }],
  }), 'nics');
  browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
}, 5 * MinuteMs);

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  await p?.stop();
});

describe('failover from the portal', () => {
  let testId = '';

  it('runs a test failover from the wizard to ready, shows its progress, stops it, and shows the drill report', async () => {
    const page = await signedIn('tenant-operator');
    await page.goto(url('/portal/t/acme/vms/web01'));
    await page.getByRole('link', { name: 'Test failover' }).click();
    await page.waitForURL(/\/portal\/t\/acme\/failover\?/);
    expect(await page.getByLabel('web01').isChecked()).toBe(true);
    expect(await page.getByLabel('db01').isChecked()).toBe(false);
    expect(await page.getByRole('radio', { name: /Test failover/ }).isChecked()).toBe(true);
    await page.getByLabel('Point', { exact: true }).selectOption('latest');
    await page.getByRole('button', { name: 'Check' }).click();
    await page.waitForLoadState('load');
    // The dry run: the NIC's address, and where it came from; the admission check.
    const plan = page.locator('table[data-plan="web01"]');
    expect(await plan.textContent()).toContain('10.9.0.5/24');
    expect(await plan.locator('tr', { hasText: 'addresses[0]' }).locator('td').nth(2).textContent()).toBe('explicit');
    expect(await page.locator('#admission-result').textContent()).toContain('fits');
    expect(await page.locator('tr[data-admission="web01"] td').nth(3).textContent()).not.toBe('does not fit');
    await expectAccessible(page, 'failover wizard');
    await screenshot(page, 'failover-wizard');
    await page.setViewportSize({ width: 375, height: 800 });
    await expectAccessible(page, 'failover wizard at phone width');
    await page.setViewportSize({ width: 1280, height: 800 });

    await page.getByRole('button', { name: 'Start test failover of web01' }).click();
    await page.waitForURL(/\/portal\/t\/acme\/failovers\/fo-[a-z0-9-]+$/);
    testId = new URL(page.url()).pathname.split('/').pop()!;
    await page.evaluate(() => Object.assign(globalThis, { notReloaded: true }));
    // The progress fragment refreshes itself until the orchestrator says ready.
    await expect.poll(() => page.locator('#failover-result').textContent(), { timeout: 5 * MinuteMs, interval: 1000 }).toMatch(/^(ready|running)$/);
    expect(await page.evaluate(() => (globalThis as { notReloaded?: boolean }).notReloaded)).toBe(true);
    await expect.poll(() => page.locator('img.shot').count(), { timeout: MinuteMs, interval: 1000 }).toBe(1);
    expect(await page.locator('img.shot').evaluate((img) => (img as unknown as { naturalWidth: number }).naturalWidth)).toBe(1);
    expect(await page.locator('tr[data-step="requested"]').count()).toBe(1);
    await expectAccessible(page, 'failover progress');
    await screenshot(page, 'failover-progress');
    await page.setViewportSize({ width: 375, height: 800 });
    await expectAccessible(page, 'failover progress at phone width');
    await page.setViewportSize({ width: 1280, height: 800 });
    // A test failover is stopped, never committed or reverted.
    expect(await page.getByRole('button', { name: /Commit|Revert/ }).count()).toBe(0);
    await page.getByRole('button', { name: 'Stop test failover' }).click();
    await page.waitForURL(new RegExp(`/failovers/${testId}$`));
    await expect.poll(() => page.locator('#failover-result').textContent(), { timeout: 3 * MinuteMs, interval: 1000 }).toBe('stopped');
    expect(await page.getByRole('button', { name: 'Stop test failover' }).count()).toBe(0);
    const api = must(await p.s.api('GET', `/v1/tenants/acme/failovers/${testId}`), 'report').body;
    expect(api.result).toBe('stopped');
    expect(api.steps.some((s) => s.step === 'stop requested' && s.status === 'done')).toBe(true);

    await page.getByRole('link', { name: 'Drill report' }).click();
    await page.waitForURL(new RegExp(`/failovers/${testId}/report$`));
    expect(await page.locator('#report-result').textContent()).toBe('stopped');
    expect(await page.locator('#report-rto').textContent()).toBe(`${api.rtoSeconds} s`);
    expect(await page.locator('#report-rpo').textContent()).toBe(`${api.rpoSeconds} s`);
    // The webhook driver reads nothing back from the guest, so the failover recorded no network
    // intent beside a result: the report says so rather than showing today's plan as then's.
    expect(api.network).toBeNull();
    expect(await page.locator('#network-none').textContent()).toContain('No network plan was recorded');
    await expectAccessible(page, 'drill report');
    await screenshot(page, 'drill-report');
    await page.setViewportSize({ width: 375, height: 800 });
    await expectAccessible(page, 'drill report at phone width');

    await page.goto(url('/portal/t/acme/failovers'));
    expect(await page.locator(`tr[data-failover="${testId}"]`).textContent()).toContain('stopped');
    await expectAccessible(page, 'failover list');
    await page.context().close();
  }, 10 * MinuteMs);

  it('asks for the VM name before a real failover, then starts it and reverts it', async () => {
    const page = await signedIn('tenant-admin');
    await page.goto(url('/portal/t/acme/failover?vm=db01&kind=unplanned&point=latest'));
    await page.getByLabel(/Type the VM's name to confirm/).fill('web01');
    await page.getByRole('button', { name: 'Start unplanned failover of db01' }).click();
    await page.waitForLoadState('load');
    expect(await page.locator('#wizard-error').textContent()).toContain('A real failover needs the VM names typed exactly: db01');
    expect((await listFailovers(p.s.svc.ctx.db, { tenant: 'acme', vm: 'db01' })).length).toBe(0);
    await page.getByLabel(/Type the VM's name to confirm/).fill('db01');
    await page.getByRole('button', { name: 'Start unplanned failover of db01' }).click();
    await page.waitForURL(/\/failovers\/fo-[a-z0-9-]+$/);
    await expect.poll(() => page.locator('#failover-result').textContent(), { timeout: 5 * MinuteMs, interval: 1000 }).toMatch(/^(ready|running)$/);
    expect(await page.getByRole('button', { name: 'Stop test failover' }).count()).toBe(0);
    const id = new URL(page.url()).pathname.split('/').pop()!;
    await page.getByRole('button', { name: 'Revert failover' }).click();
    const reverted = await p.s.waitFor(id, (r) => r.endedAt !== null, 3 * MinuteMs);
    expect(reverted.result, JSON.stringify(reverted.steps)).toBe('reverted');
    await expect.poll(() => page.locator('#failover-result').textContent(), { timeout: MinuteMs, interval: 1000 }).toBe('reverted');
    await page.context().close();
  }, 10 * MinuteMs);

  it('refuses a viewer\'s forged posts (403) and a post without the session\'s token, starting and stopping nothing', async () => {
    const viewer = await signedIn('tenant-viewer');
    await viewer.goto(url('/portal/t/acme/failover?vm=web01&kind=test'));
    expect(await viewer.getByText('may look but not start a failover').count()).toBe(1);
    expect(await viewer.getByRole('button', { name: /^Start/ }).count()).toBe(0);
    await expectAccessible(viewer, 'failover wizard of a viewer');
    const csrf = await csrfOf(viewer);
    const before = (await listFailovers(p.s.svc.ctx.db, { tenant: 'acme' })).length;
    const start = { vm: 'web01', kind: 'test', point: 'latest' };
    expect((await viewer.request.post(url('/portal/t/acme/failovers'), { form: { ...start, _csrf: csrf }, maxRedirects: 0 })).status()).toBe(403);
    expect((await viewer.request.post(url(`/portal/t/acme/failovers/${testId}/stop`), { form: { _csrf: csrf }, maxRedirects: 0 })).status()).toBe(403);
    const operator = await signedIn('tenant-operator');
    expect((await operator.request.post(url('/portal/t/acme/failovers'), { form: start, maxRedirects: 0 })).status()).toBe(403);
    expect((await operator.request.post(url('/portal/t/acme/failovers'), { form: { ...start, _csrf: csrf }, maxRedirects: 0 })).status()).toBe(403);
    expect((await listFailovers(p.s.svc.ctx.db, { tenant: 'acme' })).length).toBe(before);
    await viewer.goto(url(`/portal/t/acme/failovers/${testId}`));
    expect(await viewer.locator('#progress form').count()).toBe(0);
    await viewer.context().close();
    await operator.context().close();
  });

  it('gives another tenant\'s user 404 and nothing of the failover on every URL', async () => {
    const other = await signedIn('tenant-admin', 'globex');
    const csrf = await csrfOf(other);
    for (const path of ['/failover?vm=web01&kind=test', '/failovers', `/failovers/${testId}`, `/failovers/${testId}/progress`, `/failovers/${testId}/report`, `/failovers/${testId}/screenshot.png`]) {
      const res = await other.goto(url(`/portal/t/acme${path}`));
      expect([path, res?.status()]).toEqual([path, 404]);
      expect(await other.content()).not.toContain('web01');
    }
    await expectAccessible(other, 'not found');
    // Its own tenant's URL naming acme's VM or failover: not found either.
    expect((await other.goto(url('/portal/t/globex/failover?vm=web01&kind=test')))?.status()).toBe(404);
    expect((await other.goto(url(`/portal/t/globex/failovers/${testId}`)))?.status()).toBe(404);
    const before = (await listFailovers(p.s.svc.ctx.db, { tenant: 'acme' })).length;
    for (const [path, form] of [['/portal/t/acme/failovers', { vm: 'web01', kind: 'test', point: 'latest' }], ['/portal/t/globex/failovers', { vm: 'web01', kind: 'test', point: 'latest' }],
      [`/portal/t/acme/failovers/${testId}/stop`, {}], [`/portal/t/globex/failovers/${testId}/stop`, {}]] as const) {
      expect([path, (await other.request.post(url(path), { form: { ...form, _csrf: csrf }, maxRedirects: 0 })).status()]).toEqual([path, 404]);
    }
    expect((await listFailovers(p.s.svc.ctx.db, { tenant: 'acme' })).length).toBe(before);
    await other.context().close();
  });
});

describe('recovery plans from the portal', () => {
  let runPath = '';

  beforeAll(async () => {
    must(await p.s.api('POST', '/v1/tenants/acme/plans', {
      name: 'site', description: 'The web site', groups: [{ name: 'web', vms: ['web01'], after: [{ kind: 'wait-ready', timeoutSeconds: 600 }, { kind: 'manual', message: 'Check that the site answers' }] }],
    }), 'plan');
  });

  it('runs a plan as a test, waits at its manual step until approved here, stops its VMs, and shows its report', async () => {
    const page = await signedIn('tenant-operator');
    await page.goto(url('/portal/t/acme/plans'));
    await expectAccessible(page, 'plans');
    await page.getByRole('link', { name: 'site' }).click();
    await page.waitForURL(/\/plans\/site$/);
    expect(await page.locator('li[data-group="web"]').textContent()).toContain('manual step (approved here): Check that the site answers');
    await expectAccessible(page, 'plan');
    await screenshot(page, 'plan');
    // A real run needs the plan's name typed; nothing starts without it.
    await page.getByRole('radio', { name: 'Unplanned failover' }).check();
    await page.getByRole('button', { name: 'Run plan site' }).click();
    await page.waitForLoadState('load');
    expect(await page.getByRole('alert').textContent()).toContain('needs the plan\'s name typed exactly: site');
    expect((await must(await p.s.api<{ runs: unknown[] }>('GET', '/v1/tenants/acme/plans/site/runs'), 'runs')).body.runs).toEqual([]);

    await page.getByRole('radio', { name: 'Test run' }).check();
    await page.getByRole('button', { name: 'Run plan site' }).click();
    await page.waitForURL(/\/plans\/site\/runs\/pr-[a-z0-9]+-[0-9a-f]{8}$/);
    runPath = new URL(page.url()).pathname;
    await expect.poll(() => page.locator('#waiting-message').count(), { timeout: 5 * MinuteMs, interval: 1000 }).toBe(1);
    expect(await page.locator('#waiting-message').textContent()).toBe('Check that the site answers');
    expect(await page.locator('#run-state').textContent()).toMatch(/^waiting/);
    await expectAccessible(page, 'plan run waiting');
    await screenshot(page, 'plan-run-waiting');
    await page.setViewportSize({ width: 375, height: 800 });
    await expectAccessible(page, 'plan run at phone width');
    await page.setViewportSize({ width: 1280, height: 800 });

    await page.getByLabel('Note (optional)').fill('site answers on the test network');
    await page.getByRole('button', { name: 'Approve and go on' }).click();
    await expect.poll(() => page.locator('#run-state').textContent(), { timeout: 3 * MinuteMs, interval: 1000 }).toBe('completed');
    const api = must(await p.s.api<{ steps: { step: string; detail: string | null; by: string | null }[] }>('GET', `/v1${runPath.replace('/portal/t/', '/tenants/')}`), 'run').body;
    const approved = api.steps.find((s) => s.detail?.includes('approved: site answers on the test network'));
    expect(approved?.by).toMatch(/^tenant-operator:portal:/);

    await page.getByRole('button', { name: 'Stop the run\'s VMs' }).click();
    await expect.poll(async () => (await listFailovers(p.s.svc.ctx.db, { tenant: 'acme', active: true })).length, { timeout: 3 * MinuteMs, interval: 1000 }).toBe(0);

    await page.getByRole('link', { name: 'Printable report' }).click();
    await page.waitForURL(/\/report\.html$/);
    expect(await page.getByRole('heading', { level: 1 }).textContent()).toContain('Recovery plan site: test run');
    // Its own inline style sheet is allowed (by its hash): the table headers are shaded.
    expect(await page.locator('th').first().evaluate((th) => (globalThis as unknown as { getComputedStyle(e: unknown): { backgroundColor: string } }).getComputedStyle(th).backgroundColor)).toBe('rgb(238, 238, 238)');
    await page.context().close();
  }, 15 * MinuteMs);

  it('refuses a viewer\'s forged run and approval (403) and gives another tenant\'s user 404', async () => {
    const viewer = await signedIn('tenant-viewer');
    await viewer.goto(url('/portal/t/acme/plans/site'));
    expect(await viewer.getByRole('button', { name: 'Run plan site' }).count()).toBe(0);
    const csrf = await csrfOf(viewer);
    const runs = async () => (await must(await p.s.api<{ runs: unknown[] }>('GET', '/v1/tenants/acme/plans/site/runs'), 'runs')).body.runs.length;
    const before = await runs();
    expect((await viewer.request.post(url('/portal/t/acme/plans/site/runs'), { form: { mode: 'test', _csrf: csrf }, maxRedirects: 0 })).status()).toBe(403);
    for (const a of ['approve', 'cancel', 'stop']) expect([a, (await viewer.request.post(url(`${runPath}/${a}`), { form: { _csrf: csrf }, maxRedirects: 0 })).status()]).toEqual([a, 403]);
    expect(await runs()).toBe(before);
    await viewer.context().close();

    const other = await signedIn('tenant-admin', 'globex');
    const otherCsrf = await csrfOf(other);
    for (const path of ['/portal/t/acme/plans', '/portal/t/acme/plans/site', runPath, `${runPath}/progress`, `${runPath}/report.html`, '/portal/t/globex/plans/site', runPath.replace('/t/acme/', '/t/globex/')]) {
      const res = await other.goto(url(path));
      expect([path, res?.status()]).toEqual([path, 404]);
      expect(await other.content()).not.toContain('web01');
    }
    for (const path of ['/portal/t/acme/plans/site/runs', `${runPath}/approve`, `${runPath}/stop`]) {
      expect([path, (await other.request.post(url(path), { form: { mode: 'test', _csrf: otherCsrf }, maxRedirects: 0 })).status()]).toEqual([path, 404]);
    }
    expect(await runs()).toBe(before);
    await other.context().close();
  });
});
