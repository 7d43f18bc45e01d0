/**
 * The catalog's one small database interface, with two implementations: a `pg` pool (PostgreSQL
 * server) and PGlite (embedded PostgreSQL, the default of `init`). Everything above this file speaks
 * plain SQL with $1 parameters; int8 columns come back as JavaScript numbers on both.
 */
export interface Queryable {
  /** Runs one statement and returns its rows. */
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
}

export interface Db extends Queryable {
  /** Runs fn in one transaction: committed when it resolves, rolled back when it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** Runs a script of several statements (migrations); no parameters. */
  exec(sql: string): Promise<void>;
  close(): Promise<void>;
}

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
