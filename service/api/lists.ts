/**
 * Pages and filters of every list of the API (docs/api.md, Lists): one query grammar and one cursor
 * for all of them.
 *
 *   ?limit=1..500 (100)   items per page
 *   ?cursor=…             the `nextCursor` of the previous page (null on the last one)
 *   ?from=&to=            a time range (ISO 8601, from inclusive, to exclusive) over the list's own time
 *   ?tenant= ?state= ?vm= ?kind= …   equality filters, each named after the field of the item it tests
 *
 * A list is ordered by a key that never changes for an item and is unique: its time of creation and
 * its id (or its name where names are the ids). A page is the first `limit` items past the cursor's
 * key, so items inserted while a client walks the list never make it see an item twice or miss one
 * that existed when it started (keyset pagination). The cursor is base64url of JSON
 * `{l, k}`: `k` the key of the page's last item, `l` a hash of the path and the filters it was made
 * for; a cursor given to another list (another path, tenant or filter) or not made by us is a 400.
 * Nothing in it is secret: it names an item of the caller's own list, and the route scopes what it
 * reads by the caller's access as always.
 */
import { createHash } from 'node:crypto';
import type { Context } from 'hono';
import { z } from 'zod';
import { LifeboatError } from '../../shared/errors.js';

export const DefaultPageSize = 100;
export const MaxPageSize = 500;
const MaxCursorChars = 400;

/** A position in a list: the sort key of an item (its time in milliseconds, then its id). */
export type Key = readonly (string | number)[];

/** The paging parameters every list takes. */
export const paging = {
  limit: z.coerce.number().int().min(1).max(MaxPageSize).default(DefaultPageSize).describe(`items per page, 1 to ${MaxPageSize}`),
  cursor: z.string().max(MaxCursorChars).regex(/^[A-Za-z0-9_-]+$/, 'must be the nextCursor of a previous page').optional().describe('the nextCursor of the previous page'),
};

/** A time range over the list's own time (when the item was made, requested, happened). */
export const timeRange = {
  from: z.iso.datetime({ offset: true }).optional().describe('items at or after this time (ISO 8601)'),
  to: z.iso.datetime({ offset: true }).optional().describe('items before this time (ISO 8601)'),
};

/** The query of a list: its filters and the paging parameters. */
export function listQuery<S extends Record<string, z.ZodType>>(filters: S) {
  return z.strictObject({ ...filters, ...paging });
}

/** The answer's field holding the next page's cursor. */
export const nextCursorField = { nextCursor: z.string().nullable().describe('the cursor of the next page; null on the last page') };

export interface Paging { limit: number; cursor?: string | undefined }
export interface Page<T> { items: T[]; nextCursor: string | null }

/** The list a query names: its path and its filters, without the paging parameters. */
function listId(c: Context, q: object): string {
  const filters = Object.entries(q).filter(([k, v]) => k !== 'cursor' && k !== 'limit' && v !== undefined).sort(([a], [b]) => (a < b ? -1 : 1));
  return createHash('sha256').update(`${c.req.path}\n${JSON.stringify(filters)}`).digest('base64url').slice(0, 16);
}

const cursorShape = z.strictObject({ l: z.string(), k: z.array(z.union([z.string().max(200), z.number()])).min(1).max(4) });

/** 400: a cursor this list did not make. */
export function ErrBadCursor(): LifeboatError {
  return new LifeboatError('invalid_argument', 'query.cursor: not a cursor of this list (pass the nextCursor of the previous page, with the same path and filters)');
}

/** Where a page starts: after the cursor's key, or at the list's start. */
export function cursorKey(c: Context, q: Paging & object): Key | undefined {
  if (q.cursor === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(q.cursor, 'base64url').toString('utf8'));
  } catch {
    throw ErrBadCursor();
  }
  const cur = cursorShape.safeParse(parsed);
  if (!cur.success || cur.data.l !== listId(c, q)) throw ErrBadCursor();
  return cur.data.k;
}

function cursorFor(c: Context, q: object, key: Key): string {
  return Buffer.from(JSON.stringify({ l: listId(c, q), k: key }), 'utf8').toString('base64url');
}

/** Orders two keys part by part (numbers as numbers, strings by code unit). */
export function compareKeys(a: Key, b: Key): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (x === y) continue;
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    if (typeof x === 'number' && typeof y === 'number') return x - y;
    return String(x) < String(y) ? -1 : 1;
  }
  return 0;
}

/**
 * The page of rows a catalog query read past the cursor's key in the list's order, `limit + 1` of
 * them at most (the one more says that there is a next page).
 */
export function pageOfRows<T>(c: Context, q: Paging & object, rows: T[], keyOf: (row: T) => Key): Page<T> {
  const items = rows.slice(0, q.limit);
  const more = rows.length > q.limit && items.length > 0;
  return { items, nextCursor: more ? cursorFor(c, q, keyOf(items[items.length - 1]!)) : null };
}

/** How a list held in memory is ordered and filtered. */
export interface ListOrder<T> {
  key: (item: T) => Key;
  /** newest first (events, deliveries) or oldest first (the default). */
  order?: 'asc' | 'desc';
  /** The item's time for ?from= and ?to=, as an ISO string or milliseconds; null: outside every range. */
  at?: (item: T) => string | number | null;
  /** Equality filters: the query field's name → the item's value it must equal. */
  match?: Record<string, (item: T) => unknown>;
}

/** Milliseconds of an ISO time or milliseconds. */
export const msOf = (t: string | number | Date) => (typeof t === 'number' ? t : new Date(t).getTime());

/**
 * One page of a list the catalog reads whole (lists bounded by configuration: plans, networks,
 * keys, …): filtered, ordered by its key, the items past the cursor.
 */
export function pageOf<T>(c: Context, q: Paging & { from?: string | undefined; to?: string | undefined } & object, all: readonly T[], how: ListOrder<T>): Page<T> {
  const after = cursorKey(c, q);
  const sign = how.order === 'desc' ? -1 : 1;
  const from = q.from === undefined ? undefined : msOf(q.from);
  const to = q.to === undefined ? undefined : msOf(q.to);
  const filters = Object.entries(how.match ?? {}).flatMap(([name, get]) => {
    const want = (q as Record<string, unknown>)[name];
    return want === undefined ? [] : [(item: T) => String(get(item)) === String(want)];
  });
  const items = all.filter((item) => {
    if (!filters.every((f) => f(item))) return false;
    if ((from === undefined && to === undefined) || !how.at) return true;
    const t = how.at(item);
    if (t === null) return false;
    const ms = msOf(t);
    return (from === undefined || ms >= from) && (to === undefined || ms < to);
  }).filter((item) => after === undefined || sign * compareKeys(how.key(item), after) > 0)
    .sort((a, b) => sign * compareKeys(how.key(a), how.key(b)));
  return pageOfRows(c, q, items.slice(0, q.limit + 1), how.key);
}
