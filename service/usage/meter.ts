/**
 * The meter: usage events (service/catalog/usage.ts) in, per tenant and UTC day the quantities a
 * hoster bills, out. Pure: the caller gives the events and the end of time (its clock), so a test
 * scripts a day to the millisecond.
 *
 * An interval runs from its opening event to its closing one (a VM protected → unprotected, a
 * failover started → ended, a public address applied → removed), clipped to [from, min(to, now)) and
 * split at each UTC midnight. A replica storage sample holds until the tenant's next sample. Each
 * quantity is summed per day in exact integers (milliseconds times the unit) and rounded once per day
 * to 6 decimals (DecimalPlaces); a range's total is the sum of its rounded days, so days add up.
 */
import type { UsageEvent } from '../catalog/usage.js';

/** The metered quantities, in their billing unit. */
export const UsageFields = [
  'protectedVmHours', 'replicaGbHours', 'bytesReceived', 'testFailoverVmHours', 'failoverVmHours', 'vcpuHours', 'memoryGibHours',
  'windowsVmHours', 'publicIpHours', 'planRuns',
] as const;
export type UsageField = (typeof UsageFields)[number];

/** Decimal places of the hour-based quantities (a micro-hour is 3.6 ms). */
export const DecimalPlaces = 6;

/** Per field: the integer accumulated (unit × milliseconds, bytes, a count) and the divisor to 10^-6 of its unit. */
const Scale: Record<UsageField, bigint> = {
  protectedVmHours: 36n, // ms × 10 / 36 = micro-hours
  replicaGbHours: 36_000_000_000n, // byte·ms × 10 / (36 × 10^9) = micro GB-hours (GB = 10^9 bytes)
  bytesReceived: 0n, // whole bytes
  testFailoverVmHours: 36n,
  failoverVmHours: 36n,
  vcpuHours: 36n,
  memoryGibHours: 36_864n, // MiB·ms × 10 / 36864 = micro GiB-hours
  windowsVmHours: 36n,
  publicIpHours: 36n,
  planRuns: 0n, // a count
};

export type UsageAmounts = Record<UsageField, bigint>;

/** One tenant's usage of one UTC day (YYYY-MM-DD); hour quantities in 10^-6 of their unit, the others whole. */
export interface UsageDay {
  tenant: string;
  day: string;
  amounts: UsageAmounts;
}

const DayMs = 86_400_000;

const zero = (): UsageAmounts => Object.fromEntries(UsageFields.map((f) => [f, 0n])) as UsageAmounts;

/** Rounds n/d half up (n, d ≥ 0). */
function roundDiv(n: bigint, d: bigint): bigint {
  return (2n * n + d) / (2n * d);
}

interface OpenFailover { start: number; kind: string; cpus: number; memoryMiB: number; guestOs: string }

/** Meters the events of [from, to) as seen at `now` (nothing after now has happened yet). */
export function meter(events: readonly UsageEvent[], range: { from: Date; to: Date; now: Date }): UsageDay[] {
  const from = range.from.getTime();
  const end = Math.min(range.to.getTime(), range.now.getTime());
  const raw = new Map<string, Map<number, UsageAmounts>>();
  const add = (tenant: string, field: UsageField, s: number, e: number, weight: bigint) => {
    const a = Math.max(s, from);
    const b = Math.min(e, end);
    for (let t = a; t < b;) {
      const day = Math.floor(t / DayMs) * DayMs;
      const next = Math.min(day + DayMs, b);
      amountsOf(raw, tenant, day)[field] += BigInt(next - t) * weight;
      t = next;
    }
  };
  const state = new Map<string, { vms: Map<string, number>; ips: Map<string, number>; failovers: Map<string, OpenFailover>; sample?: { at: number; bytes: number } }>();
  const of = (tenant: string) => {
    let s = state.get(tenant);
    if (!s) state.set(tenant, (s = { vms: new Map(), ips: new Map(), failovers: new Map() }));
    return s;
  };
  const closeFailover = (tenant: string, f: OpenFailover, at: number) => {
    add(tenant, f.kind === 'test' ? 'testFailoverVmHours' : 'failoverVmHours', f.start, at, 10n);
    add(tenant, 'vcpuHours', f.start, at, BigInt(f.cpus) * 10n);
    add(tenant, 'memoryGibHours', f.start, at, BigInt(f.memoryMiB) * 10n);
    if (f.guestOs === 'windows') add(tenant, 'windowsVmHours', f.start, at, 10n);
  };
  const sampleUntil = (tenant: string, s: { sample?: { at: number; bytes: number } }, at: number) => {
    if (s.sample) add(tenant, 'replicaGbHours', s.sample.at, at, BigInt(s.sample.bytes) * 10n);
  };

  for (const e of events) {
    const at = e.at.getTime();
    const s = of(e.tenant);
    switch (e.kind) {
      case 'vm_protected': if (!s.vms.has(e.subject)) s.vms.set(e.subject, at); break;
      case 'vm_unprotected': {
        const start = s.vms.get(e.subject);
        if (start !== undefined) add(e.tenant, 'protectedVmHours', start, at, 10n);
        s.vms.delete(e.subject);
        break;
      }
      case 'public_ip_applied': if (!s.ips.has(e.subject)) s.ips.set(e.subject, at); break;
      case 'public_ip_removed': {
        const start = s.ips.get(e.subject);
        if (start !== undefined) add(e.tenant, 'publicIpHours', start, at, 10n);
        s.ips.delete(e.subject);
        break;
      }
      case 'failover_started':
        if (!s.failovers.has(e.subject)) {
          const d = e.data;
          s.failovers.set(e.subject, { start: at, kind: String(d.kind ?? 'test'), cpus: Number(d.cpus ?? 1), memoryMiB: Number(d.memoryMiB ?? 1024), guestOs: String(d.guestOs ?? 'linux') });
        }
        break;
      case 'failover_ended': {
        const f = s.failovers.get(e.subject);
        if (f) closeFailover(e.tenant, f, at);
        s.failovers.delete(e.subject);
        break;
      }
      case 'replica_bytes':
        sampleUntil(e.tenant, s, at);
        s.sample = { at, bytes: e.bytes ?? 0 };
        break;
      case 'bytes_received': if (at >= from && at < end) amountsOf(raw, e.tenant, Math.floor(at / DayMs) * DayMs).bytesReceived += BigInt(e.bytes ?? 0); break;
      case 'plan_run_started': if (at >= from && at < end) amountsOf(raw, e.tenant, Math.floor(at / DayMs) * DayMs).planRuns += 1n; break;
    }
  }
  // What is still open runs to the end of the range (or now).
  for (const [tenant, s] of state) {
    for (const start of s.vms.values()) add(tenant, 'protectedVmHours', start, end, 10n);
    for (const start of s.ips.values()) add(tenant, 'publicIpHours', start, end, 10n);
    for (const f of s.failovers.values()) closeFailover(tenant, f, end);
    sampleUntil(tenant, s, end);
  }

  const out: UsageDay[] = [];
  for (const [tenant, days] of [...raw].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    for (const [day, amounts] of [...days].sort(([a], [b]) => a - b)) {
      const rounded = Object.fromEntries(UsageFields.map((f) => [f, Scale[f] === 0n ? amounts[f] : roundDiv(amounts[f], Scale[f])])) as UsageAmounts;
      if (UsageFields.some((f) => rounded[f] !== 0n)) out.push({ tenant, day: new Date(day).toISOString().slice(0, 10), amounts: rounded });
    }
  }
  return out;
}

function amountsOf(raw: Map<string, Map<number, UsageAmounts>>, tenant: string, day: number): UsageAmounts {
  let days = raw.get(tenant);
  if (!days) raw.set(tenant, (days = new Map()));
  let a = days.get(day);
  if (!a) days.set(day, (a = zero()));
  return a;
}

/** The sum of days, field by field (exact: the days are already rounded). */
export function sumDays(days: readonly UsageDay[]): UsageAmounts {
  const total = zero();
  for (const d of days) for (const f of UsageFields) total[f] += d.amounts[f];
  return total;
}

/** A quantity as its exact decimal text: micro-units with 6 places, whole ones as they are. */
export function formatAmount(field: UsageField, value: bigint): string {
  if (Scale[field] === 0n) return value.toString();
  const s = value.toString().padStart(DecimalPlaces + 1, '0');
  return `${s.slice(0, -DecimalPlaces)}.${s.slice(-DecimalPlaces)}`;
}

/** The amounts as a JSON object of numbers (the decimal text read back: the nearest double). */
export function amountsJson(a: UsageAmounts): Record<UsageField, number> {
  return Object.fromEntries(UsageFields.map((f) => [f, Number(formatAmount(f, a[f]))])) as Record<UsageField, number>;
}
