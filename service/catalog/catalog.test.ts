/** Migrations on both catalog implementations: PGlite (embedded) and the real PostgreSQL server. */
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { openPg } from './pg.js';
import { openPglite } from './pglite.js';
import { migrate } from './migrate.js';
import type { Db } from './db.js';

const PgUrl = process.env.LIFEBOAT_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';

async function exercise(db: Db): Promise<void> {
  // Every migration in the folder, in order, once: both implementations take the same SQL.
  const files = (await readdir(new URL('./migrations/', import.meta.url))).filter((f) => f.endsWith('.sql')).sort();
  expect(files.slice(0, 3)).toEqual(['001_initial.sql', '002_cycles.sql', '003_failover.sql']);
  expect(await migrate(db)).toEqual(files);
  expect(await migrate(db)).toEqual([]);
  await db.query(`INSERT INTO tenants (name, replica_public_jwk, replica_private_wrapped) VALUES ('t', '{}', 'x')`);
  const rows = await db.query<{ id: number }>(`INSERT INTO authorizations (tenant, pattern, storage, trust_group) VALUES ('t', '*', '/s', 'g') RETURNING id`);
  expect(typeof rows[0]!.id).toBe('number');
  await expect(db.transaction(async (tx) => {
    await tx.query(`INSERT INTO tenants (name, replica_public_jwk, replica_private_wrapped) VALUES ('u', '{}', 'x')`);
    throw new Error('roll back');
  })).rejects.toThrow('roll back');
  expect(await db.query('SELECT name FROM tenants ORDER BY name')).toEqual([{ name: 't' }]);
}

describe('catalog', () => {
  it('migrates PGlite once, with int8 as numbers and transactions that roll back', async () => {
    const db = await openPglite('memory://');
    try {
      await exercise(db);
    } finally {
      await db.close();
    }
  });

  it('migrates a fresh schema of the PostgreSQL server the same way', async () => {
    const schema = `c_${randomBytes(6).toString('hex')}`;
    const db = await openPg(PgUrl, schema);
    try {
      await exercise(db);
    } finally {
      await db.close();
      const c = new pg.Client({ connectionString: PgUrl });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c.end();
    }
  });
});
