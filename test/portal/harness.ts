/**
 * The portal tests' world: a running service (real PostgreSQL schema, real Redis), tenants with VMs
 * shipped by the simulated agent and merged by a real Merger, portal users, and Debian's Chromium
 * driven by playwright-core (no browser download: LIFEBOAT_TEST_CHROMIUM or /usr/lib/chromium).
 */
import { access, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import AxeBuilder from '@axe-core/playwright';
import { Redis } from 'ioredis';
import type { Browser, Page } from 'playwright-core';
import { chromium } from 'playwright-core';
import { expect } from 'vitest';
import { createUser } from '../../service/api/users.js';
import type { UserRole } from '../../service/catalog/users.js';
import { Merger } from '../../service/workers/merger.js';
import { SimAgent, scribble } from '../service/agent-sim.js';
import type { TestEnv } from '../service/helpers.js';
import { enrolledAgent, testEnv, TestRedisUrl, testService } from '../service/helpers.js';

export const Password = 'correct horse battery staple';
const MiB = 1 << 20;
/** Where the tests leave their screenshots (linked from docs/portal.md, copies under docs/portal/). */
export const ArtifactsDir = join(process.cwd(), 'artifacts', 'portal');

export async function chromiumPath(): Promise<string | undefined> {
  for (const p of [process.env.LIFEBOAT_TEST_CHROMIUM, '/usr/lib/chromium/chromium', '/usr/bin/chromium'].filter((x): x is string => !!x)) {
    if (await access(p).then(() => true, () => false)) return p;
  }
  return undefined;
}

export interface PortalWorld {
  env: TestEnv;
  svc: Awaited<ReturnType<typeof testService>>;
  merger: Merger;
  browser: Browser;
  url(path: string): string;
  /** A user of the tenant (or the hoster's, tenant null) with Password; the name carries the run's schema. */
  user(role: UserRole, tenant: string | null): Promise<string>;
  /** A VM of the tenant with one replicating disk; ship() applies one more cycle. */
  vm(tenant: string, name: string): Promise<{ agent: SimAgent; ship(): Promise<void> }>;
  close(): Promise<void>;
}

export async function portalWorld(): Promise<PortalWorld> {
  const executablePath = await chromiumPath();
  if (!executablePath) throw new Error('Chromium is needed for the portal tests: apt-get install -y chromium (.ci/run installs it)');
  const env = await testEnv();
  const svc = await testService(env);
  const redis = new Redis(TestRedisUrl, { maxRetriesPerRequest: null });
  const merger = new Merger(svc.ctx, redis, `lbtest-${env.schema}`);
  const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
  await mkdir(ArtifactsDir, { recursive: true });
  let users = 0;
  const agents = new Map<string, Awaited<ReturnType<typeof enrolledAgent>>>();
  return {
    env, svc, merger, browser,
    url: (path) => `${svc.apiUrl}${path}`,
    async user(role, tenant) {
      const username = `${role}.${tenant ?? 'hoster'}.${++users}.${env.schema}@example.com`.replaceAll('_', '-');
      await createUser(svc.ctx, { username, role, tenant: tenant ?? undefined, password: Password });
      return username;
    },
    async vm(tenant, name) {
      let id = agents.get(tenant);
      if (!id) agents.set(tenant, id = await enrolledAgent(svc, tenant, '*', `hv1.${tenant}.example`));
      const agent = new SimAgent(svc, id, name);
      await agent.register([{ id: 'd0', virtualSize: 4 * MiB }]);
      const source = Buffer.alloc(4 * MiB);
      await agent.commitBase('d0', 1, 'full', source, [scribble(source, [[0, 64 * 1024]])]);
      await merger.merge();
      let sequence = 0;
      return {
        agent,
        async ship() {
          sequence++;
          await agent.commitLog('d0', sequence, await agent.sealed('d0', 1, sequence, source, scribble(source, [[(sequence * 128 * 1024) % (3 * MiB), 4096]])));
          await merger.merge();
        },
      };
    },
    async close() {
      await browser.close().catch(() => undefined);
      redis.disconnect();
      await svc.stop();
      await env.cleanup();
    },
  };
}

/** A page in a browser context of its own (its own cookies; axe needs a context). */
export async function newPage(world: PortalWorld): Promise<Page> {
  return (await world.browser.newContext()).newPage();
}

export async function signIn(page: Page, world: Pick<PortalWorld, 'url'>, username: string, password = Password): Promise<void> {
  await page.goto(world.url('/portal/sign-in'));
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  const posted = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/portal/sign-in');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await posted;
  await page.waitForLoadState('load');
}

/** axe-core on the page as it is: no serious or critical violation. */
export async function expectAccessible(page: Page, what: string): Promise<void> {
  const result = await new AxeBuilder({ page }).analyze();
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  expect(bad.map((v) => `${what}: ${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`)).toEqual([]);
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(ArtifactsDir, `${name}.png`), fullPage: true });
}
