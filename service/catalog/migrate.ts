/**
 * Applies the SQL files of migrations/ (NNN_name.sql, in order) that the catalog has not seen, each
 * in its own transaction with its row in schema_migrations, so a crash leaves every migration either
 * applied and recorded or neither. An advisory lock keeps two starting services from racing.
 * migrations/ lies beside this module; in the bundle (npm run build) import.meta.url names this
 * module's place under dist/src/, where the build copies them.
 */
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Db } from './types.js';

const migrationsDir = fileURLToPath(new URL('./migrations/', import.meta.url));
const MigrationLockKey = 727_001;

export async function migrate(db: Db): Promise<string[]> {
  await db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())');
  const files = (await readdir(migrationsDir)).filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f)).sort();
  const applied: string[] = [];
  for (const name of files) {
    const sql = await readFile(migrationsDir + name, 'utf8');
    const done = await db.transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock($1)', [MigrationLockKey]);
      const seen = await tx.query('SELECT 1 FROM schema_migrations WHERE name = $1', [name]);
      if (seen.length > 0) return false;
      for (const stmt of splitStatements(sql)) await tx.query(stmt);
      await tx.query('INSERT INTO schema_migrations (name) VALUES ($1)', [name]);
      return true;
    });
    if (done) applied.push(name);
  }
  return applied;
}

/**
 * Our migrations keep one statement per ';'-terminated line end and no such ';' inside statements,
 * except in a dollar-quoted body ($$ … $$, a trigger function), which is kept whole.
 */
export function splitStatements(sql: string): string[] {
  const out: string[] = [];
  let current = '';
  sql.split('$$').forEach((part, i) => {
    if (i % 2 === 1) {
      current += `$$${part}$$`;
      return;
    }
    const pieces = part.split(/;\s*(?:\n|$)/);
    current += pieces[0]!;
    for (const piece of pieces.slice(1)) {
      out.push(current);
      current = piece;
    }
  });
  out.push(current);
  return out.map((s) => s.replace(/^\s*--.*$/gm, '').trim()).filter((s) => s.length > 0);
}
