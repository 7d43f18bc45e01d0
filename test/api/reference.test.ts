/**
 * The API reference page in Chromium: Swagger UI from our own origin renders every operation of the
 * OpenAPI document under the service's Content-Security-Policy, with no request to another origin
 * and no CSP violation; its files carry their content types and the policy.
 */
import { chromium } from 'playwright-core';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReferenceAssets, ReferencePath } from '../../service/api/reference.js';
import { ContentSecurityPolicy } from '../../service/portal/security.js';
import { chromiumPath } from '../portal/harness.js';
import type { TestEnv } from '../service/helpers.js';
import { testEnv, testService } from '../service/helpers.js';

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let browser: Browser;

beforeAll(async () => {
  const executablePath = await chromiumPath();
  if (!executablePath) throw new Error('Chromium is needed for the reference page test: apt-get install -y chromium (.ci/run installs it)');
  env = await testEnv();
  svc = await testService(env);
  browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
});
afterAll(async () => {
  await browser?.close();
  await svc?.stop();
  await env?.cleanup();
});

describe('the API reference page', () => {
  it('serves the page and Swagger UI\'s files from our origin under the CSP, without a credential', async () => {
    for (const [path, type] of [[ReferencePath, 'text/html'], [ReferenceAssets.bundle, 'text/javascript'], [ReferenceAssets.css, 'text/css'], [ReferenceAssets.init, 'text/javascript'], [ReferenceAssets.icon, 'image/png']] as const) {
      const res = await fetch(`${svc.apiUrl}${path}`);
      expect([path, res.status, res.headers.get('content-type')?.split(';')[0]]).toEqual([path, 200, type]);
      expect(res.headers.get('content-security-policy')).toBe(ContentSecurityPolicy);
      const text = type === 'image/png' ? '' : await res.text();
      if (path === ReferencePath) {
        expect(text).not.toMatch(/<script>|<style|style=|https?:\/\//);
        for (const asset of Object.values(ReferenceAssets)) expect(text).toContain(asset);
      }
    }
  });

  it('renders every operation of the document in Chromium with no CSP violation and no other origin', async () => {
    const doc = (await (await fetch(`${svc.apiUrl}/v1/openapi.json`)).json()) as { paths: Record<string, object> };
    const operations = Object.values(doc.paths).reduce((n, item) => n + Object.keys(item).length, 0);
    const page = await browser.newPage();
    const problems: string[] = [];
    const origin = new URL(svc.apiUrl).origin;
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    page.on('response', (r) => { if (r.status() >= 400) problems.push(`${r.status()} for ${r.url()}`); });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith('data:')) problems.push(`request to another origin: ${r.url()}`); });
    await page.goto(`${svc.apiUrl}${ReferencePath}`);
    await page.locator('.opblock').first().waitFor({ timeout: 60_000 }).catch((e: unknown) => {
      throw new Error(`no operation shown: ${String(e)}; ${problems.join('; ')}`);
    });
    expect(await page.locator('.opblock').count()).toBe(operations);
    expect(await page.locator('.info .title').innerText()).toContain('lifeboat operator API');
    // One operation opened: its parameters and its answers, the problem schema among them.
    await page.locator('#operations-tenants-postTenantsByTenantTokens .opblock-summary-control').first().click();
    await expect.poll(() => page.locator('#operations-tenants-postTenantsByTenantTokens').innerText()).toMatch(/application\/problem\+json/);
    expect(problems).toEqual([]);
    await page.close();
  }, 120_000);
});
