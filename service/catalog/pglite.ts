/** The embedded catalog: PGlite in this process, its files under dir. Must be closed. */
import { PGlite } from '@electric-sql/pglite';
import type { Db } from './db.js';

/** Opens (creating when empty) the database under dir, or in memory when dir is 'memory://'. */
export async function openPglite(dir: string): Promise<Db> {
  const pg = await PGlite.create(dir === 'memory://' ? undefined : dir);
  return {
    query: async (sql, params) => (await pg.query(sql, params)).rows as never[],
    transaction: (fn) => pg.transaction((tx) => fn({ query: async (sql, params) => (await tx.query(sql, params)).rows as never[] })),
    async exec(sql) {
      await pg.exec(sql);
    },
    close: () => pg.close(),
  };
}
