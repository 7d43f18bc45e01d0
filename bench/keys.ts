/**
 * npm run bench -- keys: `keys rotate master` over 1,000 tenants (100 with --quick), each with its
 * replica key and one kept from a tenant key rotation, and 100 webhook secrets (10): the re-wrap of
 * every secret in one catalog transaction, on PostgreSQL (a scratch schema of the test database). No
 * peer: the row gives the whole rotation and the time per tenant.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { loadConfig } from '../service/config/config.js';
import { initDataDir } from '../service/config/init.js';
import { openContext } from '../service/context.js';
import { createTenant } from '../service/api/operations.js';
import { createSubscription } from '../service/events/subscriptions.js';
import { rotateMaster } from '../service/keys/master.js';
import { rotateTenantKey } from '../service/keys/tenant.js';
import { PgUrl as TestPgUrl, TestRedisUrl } from '../test/service/helpers.js';
import type { Benchmark } from './lib.js';
import { timeIt } from './lib.js';

const PgUrl = process.env.LIFEBOAT_BENCH_PG ?? TestPgUrl;

export const keysBench: Benchmark = {
  name: 'keys',
  description: 'master key rotation over 1,000 tenants (100 with --quick): every replica key and webhook secret re-wrapped in one transaction, PostgreSQL',
  async run(bench) {
    const tenants = bench.quick ? 100 : 1000;
    const hooks = tenants / 10;
    const dir = join(bench.workDir, 'keys');
    await rm(dir, { recursive: true, force: true });
    const { configPath } = await initDataDir({ dataDir: dir, publicHost: 'localhost' });
    const schema = `bench_keys_${process.pid}`;
    const file = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, unknown>;
    file.catalog = { kind: 'postgres', url: PgUrl, schema };
    file.redis = { url: TestRedisUrl };
    await writeFile(configPath, JSON.stringify(file));
    const ctx = await openContext(await loadConfig(configPath), { log: pino({ level: 'silent' }) });
    try {
      for (let i = 0; i < tenants; i++) {
        const name = `t${String(i).padStart(4, '0')}`;
        await createTenant(ctx, name);
        await ctx.db.transaction((tx) => rotateTenantKey(ctx, tx, name));
        if (i < hooks) await createSubscription(ctx.db, ctx.masterKey, { tenant: name, url: 'https://hooks.example.com/x', types: ['*'], createdBy: 'bench' });
      }
      let rewrapped = { tenantKeys: 0, webhookSecrets: 0 };
      const s = await timeIt(async () => {
        ({ rewrapped } = await rotateMaster(ctx, (fn) => ctx.db.transaction(fn)));
      });
      if (rewrapped.tenantKeys !== 2 * tenants || rewrapped.webhookSecrets !== hooks) throw new Error(`rotation re-wrapped ${JSON.stringify(rewrapped)}`);
      return [{
        name: `master rotation, ${tenants} tenants (${2 * tenants} keys, ${hooks} secrets)`, ours: `${s.toFixed(2)} s`, peer: '—',
        ratio: `${(s * 1000 / tenants).toFixed(2)} ms/tenant`, goal: '—', ok: undefined,
      }];
    } finally {
      await ctx.close();
      const client = new pg.Client({ connectionString: PgUrl });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await client.end();
      await rm(dir, { recursive: true, force: true });
    }
  },
};
