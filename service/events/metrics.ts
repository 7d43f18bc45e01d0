/**
 * Webhook gauges on /metrics, read from the catalog at scrape time (labels from fixed sets only):
 * deliveries by status, subscriptions by enabled, and attempts that failed in the last hour.
 */
import { Gauge } from 'prom-client';
import type { ServiceContext } from '../context.js';

export function registerWebhookMetrics(ctx: ServiceContext): void {
  const registers = [ctx.metrics.registry];
  new Gauge({
    name: 'lifeboat_webhook_deliveries', help: 'webhook deliveries kept in the catalog, by status (pending, succeeded, failed)', labelNames: ['status'], registers,
    async collect() {
      const rows = await ctx.db.query<{ status: string; n: number }>('SELECT status, count(*)::int AS n FROM webhook_deliveries GROUP BY status');
      for (const status of ['pending', 'succeeded', 'failed']) this.set({ status }, Number(rows.find((r) => r.status === status)?.n ?? 0));
    },
  });
  new Gauge({
    name: 'lifeboat_webhook_subscriptions', help: 'webhook subscriptions by enabled (false: disabled, by request or for failing a day)', labelNames: ['enabled'], registers,
    async collect() {
      const rows = await ctx.db.query<{ enabled: boolean; n: number }>('SELECT enabled, count(*)::int AS n FROM webhook_subscriptions GROUP BY enabled');
      for (const enabled of [true, false]) this.set({ enabled: String(enabled) }, Number(rows.find((r) => r.enabled === enabled)?.n ?? 0));
    },
  });
  new Gauge({
    name: 'lifeboat_webhook_failed_attempts_last_hour', help: 'webhook delivery attempts that failed in the last hour', registers,
    async collect() {
      const rows = await ctx.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM webhook_attempts WHERE NOT ok AND started_at > now() - interval '1 hour'`);
      this.set(Number(rows[0]?.n ?? 0));
    },
  });
}
