/**
 * Per-tenant and per-VM gauges on /metrics (docs/usage.md, Metrics), read from the catalog at scrape
 * time, one query each. Labels are tenant and VM names from the catalog's rows (and the fixed sets of
 * failover kinds and states), never request input: their number is bounded by what is registered.
 */
import { Gauge } from 'prom-client';
import type { ServiceContext } from '../context.js';

export function registerUsageMetrics(ctx: Pick<ServiceContext, 'db' | 'metrics'>): void {
  const registers = [ctx.metrics.registry];
  // Lag of each protected VM: since its oldest disk last applied a cycle (since registration when none has).
  const lags = async () => ctx.db.query<{ tenant: string; vm: string; lag: number }>(`SELECT v.tenant, v.name AS vm,
      extract(epoch FROM now() - CASE WHEN bool_and(d.last_applied_at IS NOT NULL) THEN min(d.last_applied_at) ELSE v.created_at END)::float8 AS lag
    FROM vms v LEFT JOIN disks d ON d.tenant = v.tenant AND d.vm = v.name WHERE v.protected GROUP BY v.tenant, v.name, v.created_at`);
  new Gauge({
    name: 'lifeboat_replication_lag_seconds', help: 'seconds since the VM last applied a cycle on every disk (its recovery point\'s age)', labelNames: ['tenant', 'vm'], registers,
    async collect() {
      this.reset();
      for (const r of await lags()) this.set({ tenant: r.tenant, vm: r.vm }, Math.max(0, Number(r.lag)));
    },
  });
  new Gauge({
    name: 'lifeboat_tenant_replication_lag_seconds', help: 'the largest replication lag of the tenant\'s protected VMs', labelNames: ['tenant'], registers,
    async collect() {
      this.reset();
      const worst = new Map<string, number>();
      for (const r of await lags()) worst.set(r.tenant, Math.max(worst.get(r.tenant) ?? 0, Number(r.lag)));
      for (const [tenant, lag] of worst) this.set({ tenant }, Math.max(0, lag));
    },
  });
  new Gauge({
    name: 'lifeboat_replication_pending_bytes', help: 'bytes of committed logs not applied yet, per VM', labelNames: ['tenant', 'vm'], registers,
    async collect() {
      this.reset();
      const rows = await ctx.db.query<{ tenant: string; vm: string; bytes: number }>(`SELECT v.tenant, v.name AS vm, coalesce(sum(l.size), 0)::int8 AS bytes
        FROM vms v LEFT JOIN logs l ON l.tenant = v.tenant AND l.vm = v.name AND l.kind = 'log' AND l.status = 'pending' GROUP BY v.tenant, v.name`);
      for (const r of rows) this.set({ tenant: r.tenant, vm: r.vm }, Number(r.bytes));
    },
  });
  new Gauge({
    name: 'lifeboat_tenant_failovers', help: 'the tenant\'s failovers not ended, by kind and state', labelNames: ['tenant', 'kind', 'state'], registers,
    async collect() {
      this.reset();
      const rows = await ctx.db.query<{ tenant: string; kind: string; state: string; n: number }>('SELECT tenant, kind, state, count(*)::int AS n FROM failovers WHERE ended_at IS NULL GROUP BY tenant, kind, state');
      for (const r of rows) this.set({ tenant: r.tenant, kind: r.kind, state: r.state }, Number(r.n));
    },
  });
}
