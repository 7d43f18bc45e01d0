/**
 * Opens the catalog: a `pg` pool (PostgreSQL server) or PGlite (embedded PostgreSQL, the default of
 * `init`), each loaded only when named, and brings its schema up to date (migrate.ts). The interface
 * both implement is in types.ts; it is exported from here too, for the modules above.
 */
import type { Db } from './types.js';

export type { Db, Queryable } from './types.js';

export type CatalogConfig = { kind: 'pglite'; dir: string } | { kind: 'postgres'; url: string; schema?: string | undefined };

/** Opens the catalog the config names (PGlite takes a few seconds) and applies migrations. */
export async function openCatalog(config: CatalogConfig): Promise<Db> {
  const db = config.kind === 'pglite'
    ? await (await import('./pglite.js')).openPglite(config.dir)
    : await (await import('./pg.js')).openPg(config.url, config.schema);
  try {
    const { migrate } = await import('./migrate.js');
    await migrate(db);
  } catch (err) {
    await db.close();
    throw err;
  }
  return db;
}
