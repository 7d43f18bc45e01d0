/**
 * Idempotency records (migration 016, docs/api.md Idempotency): the first answer to a mutation per
 * caller and Idempotency-Key, kept 24 hours.
 */
import type { Queryable } from './db.js';

export const IdempotencyKeepHours = 24;

export interface IdempotencyRecord {
  fingerprint: Buffer;
  /** null while the first request has not answered (only for changes made outside one transaction). */
  status: number | null;
  contentType: string | null;
  body: string | null;
}

/**
 * Claims (caller, key) for this request: true when it is the first (a row with no answer yet is
 * inserted), false when a record younger than 24 hours exists. An older record is replaced. Inside a
 * transaction, a concurrent claim of the same key waits here until the first one's transaction ends.
 */
export async function claimIdempotencyKey(db: Queryable, caller: string, key: string, fingerprint: Buffer): Promise<boolean> {
  await db.query(`DELETE FROM idempotency_keys WHERE caller = $1 AND key = $2 AND created_at < now() - interval '${IdempotencyKeepHours} hours'`, [caller, key]);
  const rows = await db.query('INSERT INTO idempotency_keys (caller, key, fingerprint) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1 AS claimed', [caller, key, fingerprint]);
  return rows.length === 1;
}

export async function getIdempotencyRecord(db: Queryable, caller: string, key: string): Promise<IdempotencyRecord | undefined> {
  return (await db.query<IdempotencyRecord>(
    `SELECT fingerprint, status, content_type AS "contentType", body FROM idempotency_keys WHERE caller = $1 AND key = $2 AND created_at >= now() - interval '${IdempotencyKeepHours} hours'`,
    [caller, key]))[0];
}

export async function recordIdempotentAnswer(db: Queryable, caller: string, key: string, answer: { status: number; contentType: string | null; body: string }): Promise<void> {
  await db.query('UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5 WHERE caller = $1 AND key = $2', [caller, key, answer.status, answer.contentType, answer.body]);
}

/** Keeps the answer of a request whose change rolled back (its claim went with it); a newer claim wins. */
export async function keepIdempotentAnswer(db: Queryable, caller: string, key: string, fingerprint: Buffer, answer: { status: number; contentType: string | null; body: string }): Promise<void> {
  await db.query('INSERT INTO idempotency_keys (caller, key, fingerprint, status, content_type, body) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING',
    [caller, key, fingerprint, answer.status, answer.contentType, answer.body]);
}

export async function releaseIdempotencyKey(db: Queryable, caller: string, key: string): Promise<void> {
  await db.query('DELETE FROM idempotency_keys WHERE caller = $1 AND key = $2 AND status IS NULL', [caller, key]);
}

/** Removes records past their 24 hours; the number removed. */
export async function pruneIdempotencyKeys(db: Queryable): Promise<number> {
  return (await db.query(`DELETE FROM idempotency_keys WHERE created_at < now() - interval '${IdempotencyKeepHours} hours' RETURNING 1`)).length;
}
