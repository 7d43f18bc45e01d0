/**
 * A request's transaction (docs/api.md, Audit): the API runs each mutation in one catalog transaction
 * that also holds its audit row and its idempotency record, without every operation below having to
 * pass a `tx` along. While `inTransaction(db, fn)` runs, every query on `db` made from fn's async
 * context goes into that transaction, and `db.transaction()` there nests as a savepoint (rolled back
 * alone when its function throws, as a transaction of its own would be).
 *
 * Work that must not happen before the change is visible (a job on a queue whose worker reads the
 * row) is handed to `afterCommit`: it runs once the transaction committed, and never when it rolled
 * back; outside a request's transaction it runs at once.
 *
 * The scope ends with the transaction: anything the request started that outlives it (a connection
 * made on first use, a timer) falls back to the pool, never to a finished transaction.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Db, Queryable } from './types.js';

interface Scope {
  /** The Db whose queries this transaction takes (a process may hold several catalogs: tests). */
  db: Db;
  tx: Queryable;
  open: boolean;
  savepoints: number;
  afterCommit: Array<() => Promise<void>>;
}

const current = new AsyncLocalStorage<Scope>();

function scopeOf(db: Db): Scope | undefined {
  const s = current.getStore();
  return s && s.open && s.db === db ? s : undefined;
}

/**
 * The Db a driver returns: queries and transactions join the request's transaction when one is open
 * on this Db in the caller's async context.
 */
export function scopedDb(raw: Db): Db {
  const db: Db = {
    query: (sql, params) => {
      const s = scopeOf(db);
      return s ? s.tx.query(sql, params) : raw.query(sql, params);
    },
    async transaction(fn) {
      const s = scopeOf(db);
      if (!s) return raw.transaction(fn);
      const name = `lifeboat_sp_${++s.savepoints}`;
      await s.tx.query(`SAVEPOINT ${name}`);
      try {
        const result = await fn(s.tx);
        await s.tx.query(`RELEASE SAVEPOINT ${name}`);
        return result;
      } catch (err) {
        await s.tx.query(`ROLLBACK TO SAVEPOINT ${name}`).catch(() => undefined);
        throw err;
      }
    },
    exec: (sql) => raw.exec(sql),
    close: () => raw.close(),
  };
  raws.set(db, raw);
  return db;
}

const raws = new WeakMap<Db, Db>();

/** Thrown by fn to roll back without an error of its own (the caller already has its answer). */
export class RollBack extends Error {
  constructor() {
    super('rolled back');
  }
}

/**
 * Runs fn in one transaction of db that every query on db from fn's async context joins; the work
 * handed to afterCommit runs after the commit (its failure is the caller's to log: the change stands).
 * A db not made by scopedDb gets a plain transaction (its queries outside `tx` do not join).
 */
export async function inTransaction<T>(db: Db, fn: (tx: Queryable) => Promise<T>, onAfterCommitError?: (err: unknown) => void): Promise<T> {
  const raw = raws.get(db) ?? db;
  const later: Array<() => Promise<void>> = [];
  const result = await raw.transaction(async (tx) => {
    const scope: Scope = { db, tx, open: true, savepoints: 0, afterCommit: later };
    try {
      return await current.run(scope, () => fn(tx));
    } finally {
      scope.open = false;
    }
  });
  for (const f of later) {
    try {
      await current.exit(f);
    } catch (err) {
      if (!onAfterCommitError) throw err;
      onAfterCommitError(err);
    }
  }
  return result;
}

/** Runs f after the open request transaction commits (of any catalog), or now when there is none. */
export async function afterCommit(f: () => Promise<void>): Promise<void> {
  const s = current.getStore();
  if (s?.open) s.afterCommit.push(f);
  else await f();
}
