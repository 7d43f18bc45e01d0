/**
 * The portal in real Chromium (Debian's, through playwright-core) against a running service: sign
 * in, the dashboard updating itself when a cycle is applied, sessions ending (sign-out, expiry),
 * CSRF, the per-user sign-in limit, the reset link, tenant isolation and the hoster's switcher; axe
 * on every page; screenshots to artifacts/portal/.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueResetLink } from '../../service/api/users.js';
import { signSessionToken } from '../../service/users/sessions.js';
import { SessionCookie } from '../../service/portal/security.js';
import { MaxFailuresPerUser } from '../../service/users/sign-in-limit.js';
import type { PortalWorld } from './harness.js';
import { operator } from '../service/helpers.js';
import { expectAccessible, newPage, Password, portalWorld, screenshot, signIn } from './harness.js';

let world: PortalWorld;
let alpha: Awaited<ReturnType<PortalWorld['vm']>>;

beforeAll(async () => {
  world = await portalWorld();
  alpha = await world.vm('acme', 'web01');
  await world.vm('acme', 'db01');
  await world.vm('globex', 'secret-vm');
  const nics = await operator(world.svc, 'PUT', '/v1/tenants/acme/vms/web01/nics', {
    nics: [{ mac: '52:54:00:12:34:56', reportedAddresses: ['192.168.1.10/24'], test: { mode: 'static', addresses: ['10.9.0.5/24'], gateway4: '10.9.0.1' } }],
  });
  expect(nics.status).toBe(200);
}, 180_000);
afterAll(async () => {
  await world?.close();
});

describe('portal in Chromium', () => {
  it('signs in, refusing a wrong password, and shows the tenant\'s VMs accessibly', async () => {
    const user = await world.user('tenant-viewer', 'acme');
    const page = await newPage(world);
    await page.goto(world.url('/portal'));
    expect(new URL(page.url()).pathname).toBe('/portal/sign-in');
    await expectAccessible(page, 'sign-in');
    await screenshot(page, 'sign-in');
    await signIn(page, world, user, 'not the password at all');
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('Wrong username or password');
    await signIn(page, world, user);
    expect(new URL(page.url()).pathname).toBe('/portal/t/acme');
    await expect.poll(() => page.getByRole('heading', { level: 1 }).textContent()).toBe('Protected VMs of acme');
    const rows = await page.locator('#vm-rows tr').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-vm')));
    expect(rows).toEqual(['db01', 'web01']);
    expect(await page.locator('tr[data-vm="web01"] .badge').textContent()).toBe('Normal');
    expect(await page.content()).not.toContain('secret-vm');
    await expectAccessible(page, 'dashboard');
    await screenshot(page, 'dashboard');
    await page.setViewportSize({ width: 375, height: 800 });
    await expectAccessible(page, 'dashboard at phone width');
    await screenshot(page, 'dashboard-phone');
    await page.close();
  });

  it('updates the dashboard without a reload when a cycle is applied', async () => {
    const user = await world.user('tenant-operator', 'acme');
    const page = await newPage(world);
    await signIn(page, world, user);
    const cell = page.locator('tr[data-vm="web01"] td:nth-child(4) time');
    const before = await cell.getAttribute('datetime');
    await page.evaluate(() => Object.assign(globalThis, { notReloaded: true }));
    await alpha.ship();
    await expect.poll(() => cell.getAttribute('datetime'), { timeout: 20_000, interval: 500 }).not.toBe(before);
    expect(await page.evaluate(() => (globalThis as { notReloaded?: boolean }).notReloaded)).toBe(true);
    await page.close();
  });

  it('gives a user of one tenant 404 and none of its data for every URL of another tenant', async () => {
    const user = await world.user('tenant-admin', 'acme');
    const page = await newPage(world);
    await signIn(page, world, user);
    for (const path of ['/portal/t/globex', '/portal/t/globex/rows', '/portal/t/globex/vms/secret-vm', '/portal/switch?tenant=globex', '/portal/t/nosuch']) {
      const res = await page.goto(world.url(path));
      expect([path, res?.status()]).toEqual([path, 404]);
      const html = await page.content();
      expect(html).not.toContain('secret-vm');
      expect(html.replace(/href="[^"]*"/g, '')).not.toMatch(/globex/);
    }
    await expectAccessible(page, 'not found');
    await page.close();
  });

  it('lets the hoster\'s users switch between tenants', async () => {
    const user = await world.user('hoster-operator', null);
    const page = await newPage(world);
    await signIn(page, world, user);
    expect(new URL(page.url()).pathname).toBe('/portal/t/acme');
    await page.getByLabel('Tenant').selectOption('globex');
    await page.getByRole('button', { name: 'Show' }).click();
    await page.waitForURL(/\/portal\/t\/globex$/);
    expect(await page.locator('#vm-rows tr').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-vm')))).toEqual(['secret-vm']);
    await expectAccessible(page, 'dashboard of the hoster');
    await screenshot(page, 'dashboard-hoster');
    await page.close();
  });

  it('ends a session at sign-out and at expiry, and refuses a sign-out without the session\'s CSRF token', async () => {
    const user = await world.user('tenant-viewer', 'acme');
    const context = await world.browser.newContext();
    const page = await context.newPage();
    await signIn(page, world, user);
    const token = (await context.cookies()).find((c) => c.name === SessionCookie)!.value;

    // Posted without the token, then with another session's: the session goes on.
    const other = await world.browser.newContext();
    const otherPage = await other.newPage();
    await signIn(otherPage, world, user);
    const otherCsrf = await otherPage.locator('input[name="_csrf"]').first().inputValue();
    for (const form of [{ other: 'x' }, { _csrf: otherCsrf }] as Record<string, string>[]) {
      await page.request.post(world.url('/portal/sign-out'), { form, maxRedirects: 0 });
      expect((await page.goto(world.url('/portal/t/acme')))?.status()).toBe(200);
    }

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL(/\/portal\/sign-in$/);
    // The old token, though not expired, names an ended session.
    await context.addCookies([{ name: SessionCookie, value: token, url: world.url('/portal') }]);
    await page.goto(world.url('/portal/t/acme'));
    expect(new URL(page.url()).pathname + new URL(page.url()).search).toBe('/portal/sign-in?ended=1');

    // A session whose token has expired (signed an hour ago, expiring then) sends to sign-in too.
    const expired = await signSessionToken(world.svc.ctx.signer, 'any-session', Math.floor(Date.now() / 1000) - 3600, new Date(Date.now() - 7200_000));
    await context.addCookies([{ name: SessionCookie, value: expired, url: world.url('/portal') }]);
    await page.goto(world.url('/portal/t/acme'));
    expect(new URL(page.url()).pathname).toBe('/portal/sign-in');
    expect(await page.getByRole('status').textContent()).toContain('Your session has ended');
    await context.close();
    await other.close();
  });

  it('refuses sign-in after too many failures for one user, even with the right password', async () => {
    const user = await world.user('tenant-viewer', 'acme');
    const page = await newPage(world);
    for (let i = 0; i < MaxFailuresPerUser; i++) await signIn(page, world, user, `wrong password ${i}`);
    await signIn(page, world, user);
    expect(await page.getByRole('alert').textContent()).toContain('Too many failed sign-ins');
    expect(new URL(page.url()).pathname).toBe('/portal/sign-in');
    await page.close();
  });

  it('sets a password through a one-time reset link', async () => {
    const user = await world.user('tenant-admin', 'acme');
    const link = await issueResetLink(world.svc.ctx, user);
    const page = await newPage(world);
    await page.goto(world.url(link.path));
    await expectAccessible(page, 'reset');
    await screenshot(page, 'reset');
    await page.getByLabel(/New password/).fill('a brand new passphrase');
    await page.getByLabel('The same again').fill('a brand new passphrase');
    await page.getByRole('button', { name: 'Set password' }).click();
    await page.waitForURL(/\/portal\/sign-in\?reset=1$/);
    await signIn(page, world, user, Password);
    expect(new URL(page.url()).pathname).toBe('/portal/sign-in');
    await signIn(page, world, user, 'a brand new passphrase');
    expect(new URL(page.url()).pathname).toBe('/portal/t/acme');
    expect((await page.goto(world.url(link.path)))?.status()).toBe(404);
    await page.close();
  });

  it('shows a VM\'s health, disks, points and NICs, and edits a NIC as the API validates it', async () => {
    const user = await world.user('tenant-admin', 'acme');
    const page = await newPage(world);
    const problems: string[] = [];
    page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(m.text()); });
    page.on('response', (r) => { if (r.status() >= 400) problems.push(`${r.status()} ${new URL(r.url()).pathname}`); });
    page.on('pageerror', (e) => problems.push(e.message));
    await alpha.ship();
    await signIn(page, world, user);
    await page.getByRole('link', { name: 'web01' }).click();
    await page.waitForURL(/\/portal\/t\/acme\/vms\/web01$/);
    expect(await page.getByRole('heading', { level: 1 }).textContent()).toBe('web01');
    expect(await page.locator('tr[data-point="latest"] th').textContent()).toBe('Latest');
    // The last 24 hours drawn by uPlot from our own origin (the CSP allows nothing else), 288 buckets
    // of 5 minutes; the table beside it has this hour's shipped cycles.
    await expect.poll(() => page.locator('#history-chart').getAttribute('data-drawn')).toBe('288');
    expect(await page.locator('#history-chart canvas').count()).toBe(1);
    expect(await page.locator('#history-chart .u-legend').textContent()).toMatch(/Lag.*Shipped/);
    const lastHour = page.locator('#history-table tbody tr').last();
    expect(await lastHour.locator('td').first().textContent()).toMatch(/^\d+ s$/);
    expect(await lastHour.locator('td').last().textContent()).not.toBe('0 B');
    expect(problems).toEqual([]);
    await expectAccessible(page, 'VM page');
    await screenshot(page, 'vm');
    const nic = page.getByRole('region', { name: 'NIC 52:54:00:12:34:56' });
    await nic.getByLabel('Addresses (CIDR, one per line)').first().fill('10.9.0.300/24');
    await nic.getByRole('button', { name: 'Save NIC 52:54:00:12:34:56' }).click();
    await page.waitForLoadState('load');
    const alert = await nic.getByRole('alert').textContent();
    expect(alert).toMatch(/^vm web01 nic 52:54:00:12:34:56 test\.addresses\[0\]: /);
    expect(await nic.getByLabel('Addresses (CIDR, one per line)').first().inputValue()).toBe('10.9.0.300/24');
    await expectAccessible(page, 'VM page with a refused NIC');
    await screenshot(page, 'vm-nic-refused');
    const stored = await operator<{ test: { addresses: string[] } }>(world.svc, 'GET', '/v1/tenants/acme/vms/web01/nics/52:54:00:12:34:56');
    expect(stored.body.test.addresses).toEqual(['10.9.0.5/24']);
    await nic.getByLabel('Addresses (CIDR, one per line)').first().fill('10.9.0.7/24');
    await nic.getByRole('button', { name: 'Save NIC 52:54:00:12:34:56' }).click();
    await page.waitForURL(/#nic-525400123456$/);
    expect(await page.getByRole('region', { name: 'NIC 52:54:00:12:34:56' }).textContent()).toContain('Test failover: 10.9.0.7/24 via 10.9.0.1');
    await page.close();
  });

  it('refuses a NIC form from a viewer, without the CSRF token, or with another session\'s', async () => {
    const path = world.url('/portal/t/acme/vms/web01/nics/52:54:00:12:34:56');
    const form = { 'test.mode': 'static', 'test.addresses': '10.9.0.99/24' };
    const viewer = await newPage(world);
    await signIn(viewer, world, await world.user('tenant-viewer', 'acme'));
    await viewer.goto(world.url('/portal/t/acme/vms/web01'));
    expect(await viewer.locator('form.nic').count()).toBe(0);
    const viewerCsrf = await viewer.locator('input[name="_csrf"]').first().inputValue();
    expect((await viewer.request.post(path, { form: { ...form, _csrf: viewerCsrf }, maxRedirects: 0 })).status()).toBe(403);
    const admin = await newPage(world);
    await signIn(admin, world, await world.user('tenant-admin', 'acme'));
    expect((await admin.request.post(path, { form, maxRedirects: 0 })).status()).toBe(403);
    expect((await admin.request.post(path, { form: { ...form, _csrf: viewerCsrf }, maxRedirects: 0 })).status()).toBe(403);
    const stored = await operator<{ test: { addresses: string[] } }>(world.svc, 'GET', '/v1/tenants/acme/vms/web01/nics/52:54:00:12:34:56');
    expect(stored.body.test.addresses).not.toContain('10.9.0.99/24');
    // Another tenant's user, with a valid session and token, gets 404 for this VM's page and form.
    const other = await newPage(world);
    await signIn(other, world, await world.user('tenant-admin', 'globex'));
    const otherCsrf = await other.locator('input[name="_csrf"]').first().inputValue();
    expect((await other.request.post(path, { form: { ...form, _csrf: otherCsrf }, maxRedirects: 0 })).status()).toBe(404);
    const page = await other.goto(world.url('/portal/t/acme/vms/web01'));
    expect(page?.status()).toBe(404);
    expect(await other.content()).not.toContain('52:54:00:12:34:56');
  });
});
