/**
 * The embedded catalog: PGlite in this process, its files under dir. Must be closed.
 *
 * PGlite is a single-process database: two processes opening one directory each see only their own
 * writes, and one overwrites the other's files. So the opener holds the kernel's exclusive lock on
 * `<dir>/.lock` (flock, as the replica directories' lock: dir-lock.ts) for as long as the catalog is
 * open, with its pid written in the file; a second `serve` on the same data directory is refused in
 * one line naming that pid. The lock goes with the process, so a killed holder never blocks the next.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { LifeboatError } from '../../shared/errors.js';
import { lockDir, DirLockFileName } from '../workers/dir-lock.js';
import type { DirLock } from '../workers/dir-lock.js';
import { scopedDb } from './scope.js';
import type { Db } from './types.js';

/** Opens (creating when empty) the database under dir, or in memory when dir is 'memory://'. */
export async function openPglite(dir: string): Promise<Db> {
  const lock = dir === 'memory://' ? undefined : await holdCatalog(dir);
  let pg: PGlite;
  try {
    pg = await PGlite.create(dir === 'memory://' ? undefined : dir);
  } catch (err) {
    await lock?.release();
    // PGlite's own errors can carry pages of its minified source: the first line says what failed.
    const first = (err instanceof Error ? err.message : String(err)).split('\n')[0]!.slice(0, 300);
    throw new LifeboatError('unavailable', `the embedded catalog in ${dir} did not open: ${first} (restore it from a backup, or see docs/service.md)`, { cause: err });
  }
  return scopedDb({
    query: async (sql, params) => (await pg.query(sql, params)).rows as never[],
    transaction: (fn) => pg.transaction((tx) => fn({ query: async (sql, params) => (await tx.query(sql, params)).rows as never[] })),
    async exec(sql) {
      await pg.exec(sql);
    },
    async close() {
      try {
        await pg.close();
      } finally {
        await lock?.release();
      }
    },
  });
}

/**
 * The embedded catalog's files as one gzipped tarball (PGlite's dumpDataDir), taken while this
 * process holds the catalog, so no serve writes to it meanwhile: the dump is of a closed, consistent
 * catalog. Refused in one line while another process has it open.
 */
export async function dumpPglite(dir: string): Promise<Buffer> {
  const lock = await holdCatalog(dir);
  try {
    const pg = await PGlite.create(dir);
    try {
      return Buffer.from(await (await pg.dumpDataDir('gzip')).arrayBuffer());
    } finally {
      await pg.close();
    }
  } finally {
    await lock.release();
  }
}

/** Makes the embedded catalog in dir, which must hold none yet, from a dumpPglite tarball. */
export async function loadPglite(dir: string, dump: Buffer): Promise<void> {
  const lock = await holdCatalog(dir);
  try {
    const pg = await PGlite.create({ dataDir: dir, loadDataDir: new Blob([new Uint8Array(dump)]) });
    await pg.close();
  } finally {
    await lock.release();
  }
}

async function holdCatalog(dir: string): Promise<DirLock> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const lock = await lockDir(dir);
  const path = join(dir, DirLockFileName);
  if (!lock) {
    const pid = (await readFile(path, 'utf8').catch(() => '')).trim();
    throw new LifeboatError('conflict', `the embedded catalog in ${dir} is open in another process${/^\d+$/.test(pid) ? ` (pid ${pid})` : ''}: one serve per data directory (stop it first, or use a PostgreSQL catalog for several processes)`);
  }
  await writeFile(path, `${process.pid}\n`);
  return lock;
}
