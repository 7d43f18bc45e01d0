/** The catalog on a PostgreSQL server through a `pg` pool; optionally confined to one schema. */
import pg from 'pg';
import { scopedDb } from './scope.js';
import type { Db, Queryable } from './types.js';

const Int8Oid = 20;

/** Opens a pool; with schema, every connection's search_path is that schema (created if missing). */
export async function openPg(url: string, schema?: string): Promise<Db> {
  const pool = new pg.Pool({
    connectionString: url,
    max: 16,
    types: { getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === Int8Oid ? Number : pg.types.getTypeParser(oid, format))) as typeof pg.types.getTypeParser },
    ...(schema ? { options: `-c search_path=${schema}` } : {}),
  });
  try {
    if (schema) await pool.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
  } catch (err) {
    await pool.end();
    throw err;
  }
  const run = async <T>(q: Queryable | pg.Pool | pg.PoolClient, sql: string, params?: unknown[]) => (await (q as pg.Pool).query(sql, params)).rows as T[];
  return scopedDb({
    query: (sql, params) => run(pool, sql, params),
    async transaction(fn) {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const result = await fn({ query: (sql, params) => run(client, sql, params) });
        await client.query('COMMIT');
        return result;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    },
    async exec(sql) {
      await pool.query(sql);
    },
    close: () => pool.end(),
  });
}
