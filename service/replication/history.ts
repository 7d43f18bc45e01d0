/**
 * A VM's replication over the last day, for the VM page's chart: per bucket of time (5 minutes by
 * default), the bytes of the logs the agent closed in it and the largest replication lag among them.
 *
 * A log's lag is how long its changes took to reach the replica: from the moment the agent captured
 * the cycle (closed the log, for logs that carry no capture time) until the merge worker applied it,
 * or until now while it is still pending. A bucket without logs has no lag (a gap in the chart: no
 * cycle closed then, which is what a missed cycle looks like). Read in one catalog query, by the
 * logs' primary key (tenant, vm, ...).
 */
import type { Queryable } from '../catalog/db.js';

export interface VmHistory {
  /** Seconds since the epoch of each bucket's start, oldest first, every bucket of the window. */
  t: number[];
  /** Largest lag in seconds of the bucket's logs, or null when none closed in it. */
  lagSeconds: (number | null)[];
  /** Bytes of the bucket's logs as shipped (sealed, compressed). */
  bytes: number[];
  bucketSeconds: number;
}

export const DayMs = 86_400_000;

export async function vmHistory(db: Queryable, tenant: string, vm: string, opts: { now?: Date; windowMs?: number; bucketSeconds?: number } = {}): Promise<VmHistory> {
  const now = opts.now ?? new Date();
  const bucketSeconds = opts.bucketSeconds ?? 300;
  const windowMs = opts.windowMs ?? DayMs;
  const end = Math.floor(now.getTime() / 1000 / bucketSeconds) * bucketSeconds;
  const start = end - Math.ceil(windowMs / 1000 / bucketSeconds - 1) * bucketSeconds;
  const rows = await db.query<{ b: number; bytes: number; lag: number | null }>(
    `SELECT (floor(extract(epoch FROM created_at) / $4) * $4)::int8 AS b, sum(size)::int8 AS bytes,
            max(extract(epoch FROM COALESCE(applied_at, $5::timestamptz) - COALESCE(captured_at, created_at)))::float8 AS lag
     FROM logs WHERE tenant = $1 AND vm = $2 AND kind = 'log' AND created_at >= $3 AND created_at <= $5
     GROUP BY 1`,
    [tenant, vm, new Date(start * 1000), bucketSeconds, now]);
  const byBucket = new Map(rows.map((r) => [Number(r.b), r]));
  const h: VmHistory = { t: [], lagSeconds: [], bytes: [], bucketSeconds };
  for (let b = start; b <= end; b += bucketSeconds) {
    const r = byBucket.get(b);
    h.t.push(b);
    h.lagSeconds.push(r?.lag == null ? null : Math.max(0, Math.round(r.lag)));
    h.bytes.push(Number(r?.bytes ?? 0));
  }
  return h;
}

/** The history summed into coarser buckets (hours for the page's table): total bytes, largest lag. */
export function coarsen(h: VmHistory, bucketSeconds: number): VmHistory {
  const out: VmHistory = { t: [], lagSeconds: [], bytes: [], bucketSeconds };
  h.t.forEach((t, i) => {
    const b = Math.floor(t / bucketSeconds) * bucketSeconds;
    if (out.t[out.t.length - 1] !== b) { out.t.push(b); out.lagSeconds.push(null); out.bytes.push(0); }
    const j = out.t.length - 1;
    out.bytes[j]! += h.bytes[i]!;
    const lag = h.lagSeconds[i];
    if (lag != null) out.lagSeconds[j] = Math.max(out.lagSeconds[j] ?? 0, lag);
  });
  return out;
}
