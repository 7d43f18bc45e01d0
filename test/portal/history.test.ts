/**
 * A VM's last 24 hours (service/replication/history.ts) from logs placed at known instants: each
 * 5-minute bucket sums the bytes of the logs closed in it and takes their longest lag (capture to
 * applied, or to now while pending); buckets without a log have no lag; logs of other VMs, of other
 * tenants, bases' chunks and logs older than the window count for nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { coarsen, vmHistory } from '../../service/replication/history.js';
import type { PortalWorld } from './harness.js';
import { portalWorld } from './harness.js';

let world: PortalWorld;
// A bucket boundary well clear of the real logs the harness ships (those are at the present).
const now = new Date(Date.UTC(2031, 0, 1, 12, 0, 0));
const at = (minutesAgo: number) => new Date(now.getTime() - minutesAgo * 60_000);

async function log(tenant: string, vm: string, kind: 'log' | 'chunk', sequence: number, size: number, created: Date, captured: Date | null, applied: Date | null) {
  await world.svc.ctx.db.query(
    `INSERT INTO logs (tenant, vm, disk, kind, generation, sequence, key, size, sha256, consistency, created_at, captured_at, applied_at, status)
     VALUES ($1, $2, 'd0', $3, 7, $4, $5, $6, 'x', 'crash', $7, $8, $9, $10)`,
    [tenant, vm, kind, sequence, `history-${tenant}-${vm}-${kind}-${sequence}`, size, created, captured, applied, applied ? 'applied' : 'pending']);
}

beforeAll(async () => {
  world = await portalWorld();
  await world.vm('acme', 'h1');
  await world.vm('acme', 'other');
  await world.vm('globex', 'h1');
  await log('acme', 'h1', 'log', 1, 1000, at(3), at(4), at(2));            // 11:57, lag 120 s
  await log('acme', 'h1', 'log', 2, 500, at(2), null, at(1.5));             // 11:58, no capture time: lag from close, 30 s
  await log('acme', 'h1', 'log', 3, 250, at(0), at(0.5), null);             // 12:00, pending: lag to now, 30 s
  await log('acme', 'h1', 'log', 4, 9999, at(25 * 60), at(25 * 60), at(25 * 60)); // older than the window
  await log('acme', 'h1', 'chunk', 5, 7777, at(3), at(3), at(2));           // a base's chunk, not a cycle
  await log('acme', 'other', 'log', 1, 4242, at(3), at(4), at(2));          // another VM
  await log('globex', 'h1', 'log', 1, 4343, at(3), at(4), at(2));           // another tenant's VM of the same name
}, 180_000);
afterAll(async () => {
  await world?.close();
});

describe('vm history', () => {
  it('buckets the VM\'s own logs of the last 24 hours by 5 minutes', async () => {
    const h = await vmHistory(world.svc.ctx.db, 'acme', 'h1', { now });
    expect(h.bucketSeconds).toBe(300);
    expect(h.t).toHaveLength(288);
    expect(h.t.at(-1)).toBe(now.getTime() / 1000);
    expect(h.t[0]).toBe(now.getTime() / 1000 - 287 * 300);
    expect(h.t.every((t, i) => i === 0 || t - h.t[i - 1]! === 300)).toBe(true);
    const i = h.t.indexOf(now.getTime() / 1000 - 300);
    expect([h.lagSeconds[i], h.bytes[i]]).toEqual([120, 1500]);
    expect([h.lagSeconds.at(-1), h.bytes.at(-1)]).toEqual([30, 250]);
    expect(h.bytes.reduce((a, b) => a + b, 0)).toBe(1750);
    expect(h.lagSeconds.filter((l) => l !== null)).toHaveLength(2);
    const g = await vmHistory(world.svc.ctx.db, 'globex', 'h1', { now });
    expect(g.bytes.reduce((a, b) => a + b, 0)).toBe(4343);
  });

  it('sums into hours for the page\'s table', async () => {
    const hours = coarsen(await vmHistory(world.svc.ctx.db, 'acme', 'h1', { now }), 3600);
    expect(hours.t).toHaveLength(25);
    expect([hours.lagSeconds.at(-2), hours.bytes.at(-2)]).toEqual([120, 1500]);
    expect([hours.lagSeconds.at(-1), hours.bytes.at(-1)]).toEqual([30, 250]);
    expect(hours.lagSeconds.slice(0, -2).every((l) => l === null)).toBe(true);
  });
});
