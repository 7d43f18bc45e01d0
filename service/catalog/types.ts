/**
 * The catalog's one small database interface, with two implementations: a `pg` pool (PostgreSQL
 * server, pg.ts) and PGlite (embedded PostgreSQL, the default of `init`, pglite.ts). Everything above
 * speaks plain SQL with $1 parameters; int8 columns come back as JavaScript numbers on both.
 *
 * The interface lives apart from db.ts, which imports the drivers and migrate.ts: they import it from
 * here, so no module of the catalog imports one that imports it back.
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
