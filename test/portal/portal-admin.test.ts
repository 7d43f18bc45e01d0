/**
 * The portal's tenant administration pages in real Chromium against a running service: network
 * mappings (a refused mapping shown with what was typed, nothing stored; a good one), the NIC
 * settings CSV (an import with a bad line refused whole, naming the line; a good one; the export),
 * usage (the table, a bad range, the CSV download), users (added with a one-time link that works, a
 * role changed, removed) and the audit log (filtered by who and what, never another tenant's rows).
 * Each: a viewer's forged post 403, another tenant's user 404 with nothing shown, axe at 375 px.
 */
import { readFile } from 'node:fs/promises';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertAudit } from '../../service/catalog/audit.js';
import { listMappings } from '../../service/catalog/networks.js';
import { getUserByName } from '../../service/catalog/users.js';
import type { UserRole } from '../../service/catalog/users.js';
import { operator } from '../service/helpers.js';
import type { PortalWorld } from './harness.js';
import { expectAccessible, newPage, portalWorld, screenshot, signIn } from './harness.js';

let world: PortalWorld;
const TestMs = 240_000;

beforeAll(async () => {
  world = await portalWorld();
  await world.vm('acme', 'web01');
  await world.vm('globex', 'secret-vm');
  const nics = await operator(world.svc, 'PUT', '/v1/tenants/acme/vms/web01/nics', { nics: [{ mac: '52:54:00:12:34:56', reportedAddresses: ['192.168.10.7/24'] }] });
  expect(nics.status).toBe(200);
}, 180_000);
afterAll(async () => {
  await world?.close();
});

async function as(role: UserRole, tenant = 'acme'): Promise<Page> {
  const page = await newPage(world);
  await signIn(page, world, await world.user(role, tenant));
  return page;
}

async function phone(page: Page, what: string): Promise<void> {
  await page.setViewportSize({ width: 375, height: 800 });
  await expectAccessible(page, `${what} at phone width`);
  await page.setViewportSize({ width: 1280, height: 800 });
}

const csrfOf = (page: Page) => page.locator('input[name="_csrf"]').first().inputValue();

/** Another tenant's admin: 404 and nothing of acme on every URL, GET and POST. */
async function otherTenantRefused(paths: string[], posts: [string, Record<string, string>][], secret: string): Promise<void> {
  const other = await as('tenant-admin', 'globex');
  const csrf = await csrfOf(other);
  for (const path of paths) {
    const res = await other.goto(world.url(path));
    expect([path, res?.status()]).toEqual([path, 404]);
    expect(await other.content()).not.toContain(secret);
  }
  for (const [path, form] of posts) expect([path, (await other.request.post(world.url(path), { form: { ...form, _csrf: csrf }, maxRedirects: 0 })).status()]).toEqual([path, 404]);
  await other.context().close();
}

describe('network mappings and NIC settings CSV', () => {
  it('refuses a bad mapping as the API does, keeps what was typed, then adds a good one', async () => {
    const page = await as('tenant-admin');
    await page.goto(world.url('/portal/t/acme/mappings'));
    await page.getByLabel('Kind', { exact: true }).selectOption('production');
    await page.getByLabel('Source subnet (CIDR)').fill('192.168.10.0/24');
    await page.getByLabel(/^DR subnet \(CIDR/).fill('10.50.0.0/16');
    await page.getByRole('button', { name: 'Add mapping' }).click();
    await page.waitForLoadState('load');
    expect(await page.locator('#mapping-error').textContent()).toMatch(/^mappings\[0\]\.target: prefix \/16 differs from the source's \/24/);
    expect(await page.getByLabel(/^DR subnet \(CIDR/).inputValue()).toBe('10.50.0.0/16');
    expect(await listMappings(world.svc.ctx.db, 'acme')).toEqual([]);
    await expectAccessible(page, 'mapping refused');
    await page.getByLabel(/^DR subnet \(CIDR/).fill('10.50.10.0/24');
    await page.getByLabel('Gateway (optional)').fill('10.50.10.1');
    await page.getByRole('button', { name: 'Add mapping' }).click();
    await page.waitForURL(/\/mappings$/);
    expect(await page.locator('tr[data-mapping="production 192.168.10.0/24"]').textContent()).toContain('10.50.10.1');
    expect((await listMappings(world.svc.ctx.db, 'acme')).map((m) => m.target)).toEqual(['10.50.10.0/24']);
    await expectAccessible(page, 'mappings');
    await screenshot(page, 'mappings');
    await phone(page, 'mappings');
    await page.context().close();
  }, TestMs);

  it('imports a NIC settings CSV whole or not at all, naming each bad line, and exports it', async () => {
    const page = await as('tenant-admin');
    await page.goto(world.url('/portal/t/acme/mappings'));
    const header = 'vm,mac,kind,addresses,gateway,dns,network';
    await page.getByLabel('or its text').fill(`${header}\nweb01,52:54:00:12:34:56,test,10.9.0.5/24,10.9.0.1,,\nweb01,52:54:00:zz:34:56,production,10.1.0.5/24,,,\nnosuch,52:54:00:12:34:57,test,dhcp,,,\n`);
    await page.getByRole('button', { name: 'Import: every row or none' }).click();
    await page.waitForLoadState('load');
    const alert = page.locator('#import-error');
    expect(await alert.locator('p').textContent()).toBe('CSV: 2 of 3 rows refused; nothing was imported');
    expect(await alert.locator('li[data-line="3"]').textContent()).toMatch(/^line 3: mac: /);
    expect(await alert.locator('li[data-line="4"]').textContent()).toBe('line 4: tenant acme has no VM nosuch');
    const stored = await operator<{ test?: unknown }>(world.svc, 'GET', '/v1/tenants/acme/vms/web01/nics/52:54:00:12:34:56');
    expect(stored.body.test).toBeUndefined();
    await expectAccessible(page, 'CSV import refused');
    await screenshot(page, 'mappings-import-refused');

    await page.getByLabel('or its text').fill(`${header}\nweb01,52:54:00:12:34:56,test,10.9.0.5/24,10.9.0.1,,\n`);
    await page.getByRole('button', { name: 'Import: every row or none' }).click();
    await page.waitForLoadState('load');
    expect(await page.locator('#import-result').textContent()).toBe('Imported: 1 row(s), 1 NIC(s) of 1 VM(s) (web01).');
    const download = page.waitForEvent('download');
    await page.getByRole('link', { name: /Download every NIC's settings/ }).click();
    const csv = await readFile((await (await download).path())!, 'utf8');
    expect(csv).toMatch(/^web01,52:54:00:12:34:56,test,10\.9\.0\.5\/24,10\.9\.0\.1,/m);
    await page.context().close();
  }, TestMs);

  it('refuses a viewer\'s forged changes (403) and gives another tenant\'s user 404', async () => {
    const viewer = await as('tenant-viewer');
    await viewer.goto(world.url('/portal/t/acme/mappings'));
    expect(await viewer.getByRole('button', { name: 'Add mapping' }).count()).toBe(0);
    await expectAccessible(viewer, 'mappings of a viewer');
    const csrf = await csrfOf(viewer);
    const form = { kind: 'test', source: '192.168.20.0/24', target: '10.60.20.0/24' };
    for (const path of ['/portal/t/acme/mappings', '/portal/t/acme/mappings/remove', '/portal/t/acme/mappings/import']) {
      expect([path, (await viewer.request.post(world.url(path), { form: { ...form, csv: 'vm,mac,kind,addresses,gateway,dns,network\n', _csrf: csrf }, maxRedirects: 0 })).status()]).toEqual([path, 403]);
    }
    expect((await listMappings(world.svc.ctx.db, 'acme')).length).toBe(1);
    await viewer.context().close();
    await otherTenantRefused(['/portal/t/acme/mappings', '/portal/t/acme/mappings/nic-settings.csv'],
      [['/portal/t/acme/mappings', form], ['/portal/t/acme/mappings/remove', { kind: 'production', source: '192.168.10.0/24' }], ['/portal/t/acme/mappings/import', { csv: 'x' }]], '10.50.10.0');
    expect((await listMappings(world.svc.ctx.db, 'acme')).length).toBe(1);
  }, TestMs);
});

describe('usage', () => {
  it('shows the usage per day, refuses a bad range, and downloads it as CSV', async () => {
    const page = await as('tenant-viewer');
    await page.goto(world.url('/portal/t/acme/usage'));
    expect(await page.getByRole('heading', { level: 1 }).textContent()).toBe('Usage of acme');
    const today = new Date().toISOString().slice(0, 10);
    expect(await page.locator(`tr[data-day="${today}"]`).count()).toBe(1);
    await expectAccessible(page, 'usage');
    await screenshot(page, 'usage');
    await phone(page, 'usage');
    const download = page.waitForEvent('download');
    await page.getByRole('link', { name: 'Download as CSV' }).click();
    const lines = (await readFile((await (await download).path())!, 'utf8')).trim().split('\n');
    expect(lines[0]).toBe('tenant,day,protectedVmHours,replicaGbHours,bytesReceived,testFailoverVmHours,failoverVmHours,vcpuHours,memoryGibHours,windowsVmHours,publicIpHours,planRuns');
    expect(lines.slice(1).map((l) => l.split(',')[0])).toEqual(lines.slice(1).map(() => 'acme'));
    expect(lines.some((l) => l.startsWith(`acme,${today},`))).toBe(true);
    await page.getByLabel(/^From/).fill('yesterday');
    await page.getByRole('button', { name: 'Show' }).click();
    await page.waitForLoadState('load');
    expect(await page.locator('#usage-error').textContent()).toMatch(/^from must be a date/);
    await page.context().close();
    await otherTenantRefused(['/portal/t/acme/usage', '/portal/t/acme/usage.csv'], [], 'acme,');
  }, TestMs);
});

describe('users', () => {
  it('lets a tenant admin add a user with a working one-time link, change its role and remove it', async () => {
    const page = await as('tenant-admin');
    await page.goto(world.url('/portal/t/acme/users'));
    await page.getByLabel(/^Username/).fill('Not A Name!');
    await page.getByRole('button', { name: 'Add user' }).click();
    await page.waitForLoadState('load');
    expect(await page.locator('#users-error').textContent()).toMatch(/^username "Not A Name!" must be/);
    const name = `new.person.${world.env.schema.replaceAll('_', '-')}@acme.example`;
    await page.getByLabel(/^Username/).fill(name);
    await page.getByLabel('Role', { exact: true }).selectOption('tenant-operator');
    await page.getByRole('button', { name: 'Add user' }).click();
    await page.waitForLoadState('load');
    const link = (await page.locator('#reset-link code').textContent())!;
    expect(link).toMatch(new RegExp(`^${world.url('/portal/reset/')}[A-Za-z0-9_-]{43}$`));
    expect((await getUserByName(world.svc.ctx.db, name))).toMatchObject({ tenant: 'acme', role: 'tenant-operator', passwordHash: null });
    await expectAccessible(page, 'users with a new link');
    await screenshot(page, 'users');
    await phone(page, 'users');
    const reset = await newPage(world);
    expect((await reset.goto(link))?.status()).toBe(200);
    await reset.context().close();

    await page.goto(world.url('/portal/t/acme/users'));
    const row = page.locator(`tr[data-user="${name}"]`);
    await row.getByRole('combobox').selectOption('tenant-viewer');
    await row.getByRole('button', { name: 'Set role' }).click();
    await page.waitForURL(/\/users$/);
    expect(await page.locator(`tr[data-user="${name}"] td`).first().textContent()).toBe('tenant-viewer');
    await page.locator(`tr[data-user="${name}"]`).getByRole('button', { name: `Remove ${name}` }).click();
    await page.waitForURL(/\/users$/);
    expect(await page.locator(`tr[data-user="${name}"]`).count()).toBe(0);
    expect(await getUserByName(world.svc.ctx.db, name)).toBeUndefined();
    await page.context().close();
  }, TestMs);

  it('refuses a viewer\'s or operator\'s forged changes (403) and gives another tenant\'s user 404', async () => {
    const target = await world.user('tenant-viewer', 'acme');
    for (const role of ['tenant-viewer', 'tenant-operator'] as const) {
      const page = await as(role);
      await page.goto(world.url('/portal/t/acme/users'));
      expect(await page.getByRole('button', { name: 'Add user' }).count()).toBe(0);
      const csrf = await csrfOf(page);
      for (const [path, form] of [['/portal/t/acme/users', { username: `x.${role}@acme.example`, role: 'tenant-admin' }], ['/portal/t/acme/users/role', { username: target, role: 'tenant-admin' }],
        ['/portal/t/acme/users/remove', { username: target }], ['/portal/t/acme/users/reset-link', { username: target }]] as const) {
        expect([role, path, (await page.request.post(world.url(path), { form: { ...form, _csrf: csrf }, maxRedirects: 0 })).status()]).toEqual([role, path, 403]);
      }
      await page.context().close();
    }
    expect((await getUserByName(world.svc.ctx.db, target))?.role).toBe('tenant-viewer');
    await otherTenantRefused(['/portal/t/acme/users'], [['/portal/t/acme/users/role', { username: target, role: 'tenant-admin' }], ['/portal/t/globex/users/role', { username: target, role: 'tenant-admin' }],
      ['/portal/t/globex/users/remove', { username: target }], ['/portal/t/globex/users/reset-link', { username: target }]], target);
    expect((await getUserByName(world.svc.ctx.db, target))?.role).toBe('tenant-viewer');
  }, TestMs);
});

describe('audit log', () => {
  it('lists the tenant\'s entries filtered by who and what, and none of another tenant\'s', async () => {
    const row = (actor: string, tenant: string, action: string) => ({ actor, actorKey: null, actorRole: 'tenant-admin', actorTenant: tenant, tenant, action, target: `${tenant}/web01`, source: '192.0.2.1', requestId: null, result: 'ok' });
    await insertAudit(world.svc.ctx.db, row('alice@acme.example', 'acme', 'failover.request'));
    await insertAudit(world.svc.ctx.db, row('bob@acme.example', 'acme', 'api-key.create'));
    await insertAudit(world.svc.ctx.db, row('mallory@globex.example', 'globex', 'failover.request'));
    const page = await as('tenant-viewer');
    await page.goto(world.url('/portal/t/acme/audit'));
    const actors = () => page.locator('tr[data-audit] td:nth-child(2)').allTextContents();
    // Besides the rows written here, the tenant's own creation (by the service's admin) is acme's.
    expect(await actors()).toEqual(expect.arrayContaining(['alice@acme.example', 'bob@acme.example']));
    expect(await actors()).not.toContain('mallory@globex.example');
    await expectAccessible(page, 'audit');
    await screenshot(page, 'audit');
    await phone(page, 'audit');
    await page.getByLabel(/^Who/).fill('alice@acme.example');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/actor=alice/);
    expect(await actors()).toEqual(['alice@acme.example']);
    await page.goto(world.url('/portal/t/acme/audit?action=api-key'));
    expect(await actors()).toEqual(['bob@acme.example']);
    await page.goto(world.url('/portal/t/acme/audit?actor=mallory%40globex.example'));
    expect(await actors()).toEqual([]);
    await page.goto(world.url('/portal/t/acme/audit?from=last+week'));
    expect(await page.locator('#audit-error').textContent()).toBe('Dates are written 2026-12-07.');
    await page.context().close();
    await otherTenantRefused(['/portal/t/acme/audit', '/portal/t/acme/audit?actor=alice%40acme.example'], [], 'alice@acme.example');
  }, TestMs);
});
