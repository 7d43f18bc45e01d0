/**
 * Entity tags of the API's single objects (docs/api.md, ETags and conditional requests).
 *
 * - An object's etag is strong: `"` + the first 16 bytes of SHA-256 over its canonical JSON (keys
 *   sorted, no spaces) in base64url + `"`, computed over the object as its route presents it, without
 *   the etag itself and without what an answer shows once (a new secret or key). Any change of what a
 *   client sees changes it; the same state gives the same etag in every service process.
 * - Every answer that is one object carries it twice: the `ETag` header and the body's `etag` field
 *   (the same string, quotes included, so it can be sent back as is).
 * - `If-None-Match` on a GET: 304 with the ETag and no body when it names the current etag (or `*`).
 * - `If-Match` on a PUT, PATCH or DELETE of one object: the change happens only when it names the
 *   current etag (or `*` for any existing object); otherwise 412 `precondition_failed`, nothing
 *   changed. A missing object is the route's 404 as without the header, but a PUT that would create
 *   it is 412. It is optional (no 428): scripts and the portal change objects without it, and
 *   Idempotency-Key already makes their retries safe.
 * - The check and the change are one: the route takes the object's lock (a transaction-scoped
 *   advisory lock on its identity) in the request's transaction before it reads the current state, so
 *   two changes of one object through the API run one after the other and the second is checked
 *   against what the first left.
 */
import { createHash } from 'node:crypto';
import type { Context } from 'hono';
import type { Queryable } from '../catalog/db.js';
import { ServiceError } from '../errors.js';

/** JSON with every object's keys in code-unit order: one text for one value. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonical(v))).join(',')}]`;
  if (value !== null && typeof value === 'object' && !(value instanceof Date)) {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** The strong etag of an object's representation (its `etag` field, if any, left out). */
export function etagOf(representation: object): string {
  const { etag: _etag, ...rest } = representation as Record<string, unknown>;
  return `"${createHash('sha256').update(canonical(rest)).digest('base64url').slice(0, 22)}"`;
}

/** A list's item with the etag its own GET would give it (lists whose items are the objects' representations). */
export function withEtag<T extends object>(representation: T): T & { etag: string } {
  return { ...representation, etag: etagOf(representation) };
}

/** The entity tags a conditional header lists (`*` as itself); weak ones never match (strong comparison). */
function tagsOf(header: string): string[] {
  return header.split(',').map((t) => t.trim()).filter((t) => t !== '');
}

function matches(header: string, current: string, weakAllowed: boolean): boolean {
  return tagsOf(header).some((t) => t === '*' || t === current || (weakAllowed && t === `W/${current}`));
}

/**
 * The answer of one object: the body with its `etag`, and the ETag header. `extra` are fields shown
 * with it but not part of it (a secret shown once), left out of the etag. On a GET whose
 * If-None-Match names the etag: 304 without a body.
 */
export function single(c: Context, representation: object, status: 200 | 201 | 202 = 200, extra: object = {}): Response {
  const etag = etagOf(representation);
  const inm = c.req.header('if-none-match');
  if (c.req.method === 'GET' && inm !== undefined && matches(inm, etag, true)) return c.body(null, 304, { etag });
  return c.json({ ...representation, ...extra, etag }, status, { etag });
}

/**
 * Takes one object's lock until the caller's transaction ends (`kind:id`, as ifMatch names it). The
 * commands a route and the portal share take it too, so a portal form's change and a conditional
 * API change of one object run one after the other. Taken again in one transaction, it is held once.
 */
export async function lockObject(db: Queryable, identity: string): Promise<void> {
  await db.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`lifeboat:object:${identity}`]);
}

/**
 * The precondition of a change to one object: takes the object's lock for the rest of the request's
 * transaction, then checks `If-Match` against the etag of its current representation (`current`
 * presents it as its GET does; undefined when it does not exist). A mismatch is 412 and the request
 * changes nothing. Call it before reading the state the change depends on.
 */
export async function ifMatch(c: Context, db: Queryable, identity: string, current: () => Promise<object | undefined>, options: { creates?: boolean } = {}): Promise<void> {
  await lockObject(db, identity);
  const header = c.req.header('if-match');
  if (header === undefined) return;
  const now = await current();
  if (now === undefined) {
    // RFC 9110 §13.2.1: a missing object answers as it would without the header (the route's 404),
    // except where the request would make it (a PUT that creates): there no etag can match.
    if (!options.creates) return;
    throw new ServiceError('precondition_failed', 'If-Match: the object does not exist (send the PUT without If-Match to create it)', 'etag_mismatch', undefined, { status: 412 });
  }
  const tag = etagOf(now);
  if (matches(header, tag, false)) return;
  throw new ServiceError('precondition_failed', `If-Match: the object changed since that etag was read (its etag is now ${tag}); read it again and redo the change`, 'etag_mismatch', undefined, { headers: { etag: tag } });
}
