/**
 * The usage report behind GET /v1/usage and `lifeboat-service usage`: the meter over the catalog's
 * events for a range of whole or partial UTC days, as JSON (per tenant its days and their total) or
 * CSV (one row per tenant and day, the decimal text exact; written by csv-stringify).
 */
import { stringify } from 'csv-stringify/sync';
import { LifeboatError } from '../../shared/errors.js';
import type { Queryable } from '../catalog/db.js';
import { usageEvents } from '../catalog/usage.js';
import type { UsageDay, UsageField } from './meter.js';
import { UsageFields, amountsJson, formatAmount, meter, sumDays } from './meter.js';

/** The longest range one report covers (a year and a day). */
export const MaxRangeDays = 366;

export interface UsageRange {
  from: Date;
  to: Date;
  /** One tenant, or every tenant. */
  tenant?: string | undefined;
}

export interface UsageReport {
  from: string;
  to: string;
  /** The end of what is metered: `to`, or the time of the report when `to` is later. */
  until: string;
  units: Record<UsageField, string>;
  tenants: { tenant: string; days: ({ day: string } & Record<UsageField, number>)[]; total: Record<UsageField, number> }[];
}

export const Units: Record<UsageField, string> = {
  protectedVmHours: 'VM-hours a VM was protected (registered and not unprotected)',
  replicaGbHours: 'GB-hours of allocated replica storage (GB = 10^9 bytes), sampled',
  bytesReceived: 'bytes of logs and base chunks committed',
  testFailoverVmHours: 'VM-hours of test failovers, from start to end',
  failoverVmHours: 'VM-hours of planned and unplanned failovers, from start to end',
  vcpuHours: 'vCPU-hours of failed-over VMs (test and real)',
  memoryGibHours: 'GiB-hours of memory of failed-over VMs (test and real)',
  windowsVmHours: 'VM-hours of failed-over VMs whose recorded guest OS is Windows',
  publicIpHours: 'hours a public address was mapped to a failed-over VM',
  planRuns: 'recovery plan runs started',
};

/**
 * Parses a range bound: a date (YYYY-MM-DD, its UTC midnight) or an ISO 8601 time with a zone.
 * Defaults: from the first of the current UTC month, to now.
 */
export function parseRange(q: { from?: string | undefined; to?: string | undefined; tenant?: string | undefined }, now: Date): UsageRange {
  const from = q.from === undefined ? new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)) : parseTime(q.from, 'from');
  const to = q.to === undefined ? now : parseTime(q.to, 'to');
  if (to.getTime() <= from.getTime()) throw new LifeboatError('invalid_argument', `to (${to.toISOString()}) must be after from (${from.toISOString()})`);
  if (to.getTime() - from.getTime() > MaxRangeDays * 86_400_000) throw new LifeboatError('invalid_argument', `a usage report covers at most ${MaxRangeDays} days; ask for several`);
  return { from, to, tenant: q.tenant };
}

function parseTime(text: string, name: string): Date {
  const ok = /^\d{4}-\d{2}-\d{2}$/.test(text) || /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/.test(text);
  const d = new Date(/^\d{4}-\d{2}-\d{2}$/.test(text) ? `${text}T00:00:00Z` : text);
  if (!ok || Number.isNaN(d.getTime())) throw new LifeboatError('invalid_argument', `${name} must be a date (2026-12-01) or a time with its zone (2026-12-01T08:00:00Z), not ${JSON.stringify(text.slice(0, 40))}`);
  return d;
}

/** The metered days of the range, as the clock `now` sees them. */
export async function usageDays(db: Queryable, range: UsageRange, now: Date): Promise<UsageDay[]> {
  return meter(await usageEvents(db, range), { from: range.from, to: range.to, now });
}

export async function usageReport(db: Queryable, range: UsageRange, now: Date): Promise<UsageReport> {
  const days = await usageDays(db, range, now);
  const tenants = [...new Set(days.map((d) => d.tenant))];
  return {
    from: range.from.toISOString(),
    to: range.to.toISOString(),
    until: new Date(Math.min(range.to.getTime(), Math.max(now.getTime(), range.from.getTime()))).toISOString(),
    units: Units,
    tenants: tenants.map((tenant) => {
      const mine = days.filter((d) => d.tenant === tenant);
      return { tenant, days: mine.map((d) => ({ day: d.day, ...amountsJson(d.amounts) })), total: amountsJson(sumDays(mine)) };
    }),
  };
}

/** One CSV row per tenant and day with usage, a header first; the amounts as exact decimal text. */
export function usageCsv(days: readonly UsageDay[]): string {
  return stringify([
    ['tenant', 'day', ...UsageFields],
    ...days.map((d) => [d.tenant, d.day, ...UsageFields.map((f) => formatAmount(f, d.amounts[f]))]),
  ]);
}
