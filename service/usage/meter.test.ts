/** The meter on scripted events: intervals split at UTC midnight, exact figures, days that add up. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { UsageEvent, UsageEventKind } from '../catalog/usage.js';
import { formatAmount, meter, sumDays, UsageFields } from './meter.js';
import { usageCsv } from './report.js';

let nextId = 1;
const ev = (kind: UsageEventKind, subject: string, at: string, extra: Partial<UsageEvent> = {}): UsageEvent =>
  ({ id: nextId++, tenant: 'acme', kind, subject, at: new Date(at), bytes: null, data: {}, ...extra });

/** One scripted day, 2026-03-10 UTC, with what ran into it and out of it. */
const day = [
  ev('vm_protected', 'web', '2026-03-09T18:00:00Z'),
  ev('replica_bytes', '', '2026-03-10T00:00:00Z', { bytes: 1e9 }),
  ev('bytes_received', 'web', '2026-03-10T01:00:00Z', { bytes: 1000 }),
  ev('vm_protected', 'db', '2026-03-10T06:00:00Z'),
  ev('plan_run_started', 'pr-1', '2026-03-10T09:00:00Z'),
  ev('failover_started', 'fo-t', '2026-03-10T10:00:00Z', { data: { kind: 'test', cpus: 2, memoryMiB: 4096, guestOs: 'windows' } }),
  ev('public_ip_applied', 'fo-t/203.0.113.7', '2026-03-10T10:05:00Z'),
  ev('public_ip_removed', 'fo-t/203.0.113.7', '2026-03-10T11:00:00Z'),
  ev('replica_bytes', '', '2026-03-10T12:00:00Z', { bytes: 3e9 }),
  ev('failover_ended', 'fo-t', '2026-03-10T12:30:00Z'),
  ev('vm_unprotected', 'db', '2026-03-10T18:00:00Z'),
  ev('failover_started', 'fo-u', '2026-03-10T22:00:00Z', { data: { kind: 'unplanned', cpus: 4, memoryMiB: 2048, guestOs: 'linux' } }),
  ev('bytes_received', 'web', '2026-03-10T23:59:59.999Z', { bytes: 2345 }),
  ev('bytes_received', 'web', '2026-03-11T00:00:00Z', { bytes: 7 }),
  ev('failover_ended', 'fo-u', '2026-03-11T02:00:00Z'),
];

const text = (d: { amounts: Record<string, bigint> }) => Object.fromEntries(UsageFields.map((f) => [f, formatAmount(f, d.amounts[f]!)]));

describe('meter', () => {
  it('meters a scripted day exactly', () => {
    const days = meter(day, { from: new Date('2026-03-10T00:00:00Z'), to: new Date('2026-03-11T00:00:00Z'), now: new Date('2026-03-12T00:00:00Z') });
    expect(days.map((d) => d.day)).toEqual(['2026-03-10']);
    expect(text(days[0]!)).toEqual({
      protectedVmHours: '36.000000', // web all day, db 06:00–18:00
      replicaGbHours: '48.000000', // 1 GB for 12 h, 3 GB for 12 h
      bytesReceived: '3345', // the byte at midnight belongs to the next day
      testFailoverVmHours: '2.500000',
      failoverVmHours: '2.000000', // 22:00 to midnight; the rest is the next day's
      vcpuHours: '13.000000', // 2 × 2.5 + 4 × 2
      memoryGibHours: '14.000000', // 4 GiB × 2.5 + 2 GiB × 2
      windowsVmHours: '2.500000',
      publicIpHours: '0.916667', // 55 minutes, rounded once for the day
      planRuns: '1',
    });
  });

  it('splits at midnight, stops at now, and its days add up to the total', () => {
    const range = { from: new Date('2026-03-09T00:00:00Z'), to: new Date('2026-03-12T00:00:00Z'), now: new Date('2026-03-11T01:00:00Z') };
    const days = meter(day, range);
    expect(days.map((d) => d.day)).toEqual(['2026-03-09', '2026-03-10', '2026-03-11']);
    expect(text(days[0]!)).toMatchObject({ protectedVmHours: '6.000000', replicaGbHours: '0.000000' });
    // Up to now (01:00): web an hour, the unplanned failover an hour, 7 bytes; its end at 02:00 has not happened.
    expect(text(days[2]!)).toMatchObject({ protectedVmHours: '1.000000', failoverVmHours: '1.000000', vcpuHours: '4.000000', bytesReceived: '7', replicaGbHours: '3.000000' });
    const total = sumDays(days);
    expect(formatAmount('protectedVmHours', total.protectedVmHours)).toBe('43.000000');
    expect(formatAmount('failoverVmHours', total.failoverVmHours)).toBe('3.000000');
    expect(usageCsv(days).split('\n')[0]).toBe(`tenant,day,${UsageFields.join(',')}`);
  });

  it('ignores an end without a start and a second start of what is open', () => {
    const days = meter([
      ev('vm_unprotected', 'x', '2026-03-10T01:00:00Z'),
      ev('vm_protected', 'x', '2026-03-10T02:00:00Z'),
      ev('vm_protected', 'x', '2026-03-10T03:00:00Z'),
      ev('vm_unprotected', 'x', '2026-03-10T04:00:00Z'),
    ], { from: new Date('2026-03-10T00:00:00Z'), to: new Date('2026-03-11T00:00:00Z'), now: new Date('2026-03-12T00:00:00Z') });
    expect(text(days[0]!).protectedVmHours).toBe('2.000000');
  });

  it('gives the same days whether a range is metered whole or in two parts split at midnight', () => {
    const base = Date.UTC(2026, 2, 1);
    const kinds: [UsageEventKind, UsageEventKind | null][] = [['vm_protected', 'vm_unprotected'], ['failover_started', 'failover_ended'], ['public_ip_applied', 'public_ip_removed'],
      ['bytes_received', null], ['replica_bytes', null], ['plan_run_started', null]];
    const arbEvent = fc.record({ k: fc.integer({ min: 0, max: kinds.length - 1 }), end: fc.boolean(), subject: fc.constantFrom('a', 'b'), ms: fc.integer({ min: 0, max: 6 * 86_400_000 }),
      bytes: fc.integer({ min: 0, max: 2 ** 40 }), cpus: fc.integer({ min: 1, max: 64 }), mem: fc.integer({ min: 64, max: 1 << 20 }), win: fc.boolean(), test: fc.boolean() });
    fc.assert(fc.property(fc.array(arbEvent, { maxLength: 40 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 7 * 86_400_000 }), (raw, split, nowMs) => {
      const events = raw.map((r, i): UsageEvent => {
        const [open, close] = kinds[r.k]!;
        return { id: i + 1, tenant: 't', kind: r.end && close ? close : open, subject: r.subject, at: new Date(base + r.ms), bytes: r.bytes,
          data: { kind: r.test ? 'test' : 'planned', cpus: r.cpus, memoryMiB: r.mem, guestOs: r.win ? 'windows' : 'linux' } };
      }).sort((a, b) => a.at.getTime() - b.at.getTime() || a.id - b.id);
      const from = new Date(base);
      const mid = new Date(base + split * 86_400_000);
      const to = new Date(base + 6 * 86_400_000);
      const now = new Date(base + nowMs);
      const whole = meter(events, { from, to, now });
      const parts = [...meter(events, { from, to: mid, now }), ...meter(events, { from: mid, to, now })];
      expect(parts).toEqual(whole);
    }), { numRuns: 300 });
  });
});
