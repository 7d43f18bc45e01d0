/**
 * Failover gauges on /metrics, read from the catalog at scrape time (one query each, labels bounded
 * by fixed sets: kind × state, no tenant or VM names): live failovers by kind and state, failover
 * hosts by liveness, pinned points and the replica storage held because of pins.
 */
import { Gauge } from 'prom-client';
import type { ServiceContext } from '../context.js';
import { pinnedStorage } from '../workers/pinned-storage.js';
import { HostStaleMs } from './engine.js';

export function registerFailoverMetrics(ctx: ServiceContext): void {
  const registers = [ctx.metrics.registry];
  new Gauge({
    name: 'lifeboat_failovers', help: 'failovers not ended, by kind and state', labelNames: ['kind', 'state'], registers,
    async collect() {
      this.reset();
      const rows = await ctx.db.query<{ kind: string; state: string; n: number }>('SELECT kind, state, count(*)::int AS n FROM failovers WHERE ended_at IS NULL GROUP BY kind, state');
      for (const r of rows) this.set({ kind: r.kind, state: r.state }, Number(r.n));
    },
  });
  new Gauge({
    name: 'lifeboat_failover_hosts', help: 'failover hosts by liveness (a heartbeat in the last minute)', labelNames: ['live'], registers,
    async collect() {
      const rows = await ctx.db.query<{ live: boolean; n: number }>(`SELECT heartbeat_at > now() - $1 * interval '1 millisecond' AS live, count(*)::int AS n FROM failover_hosts GROUP BY 1`, [HostStaleMs]);
      this.reset();
      for (const live of [true, false]) this.set({ live: String(live) }, Number(rows.find((r) => r.live === live)?.n ?? 0));
    },
  });
  new Gauge({
    name: 'lifeboat_pinned_storage_bytes', help: 'replica storage kept only because recovery points are pinned by failovers', registers,
    async collect() {
      this.set((await pinnedStorage(ctx)).reduce((n, p) => n + p.bytes, 0));
    },
  });
}
