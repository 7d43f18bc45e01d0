/**
 * `lifeboat-service webhook …`, a client of the running service's API (docs/webhooks.md), with the
 * hoster's admin token:
 *   webhook create --url URL [--tenant T] [--types a,b|*] [--description D] [--json]
 *                                  a tenant's subscription, or hoster-wide without --tenant; prints the secret once
 *   webhook list [--tenant T | --hoster] [--json]
 *   webhook delete ID
 *   webhook enable ID | disable ID
 *   webhook test ID [--json]        a webhook.test event to this subscription only
 *   webhook deliveries ID [--status pending|succeeded|failed] [--limit N] [--json]
 *   webhook delivery ID DELIVERY [--json]      one delivery with its attempts
 *   webhook redeliver ID DELIVERY [--json]
 */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { ErrInvalidArgument } from '../../shared/errors.js';
import { apiClient, withConfig } from './common.js';

type Opts = { config?: string; json?: boolean };
const seg = encodeURIComponent;

interface Subscription { id: string; tenant: string | null; url: string; types: string[]; enabled: boolean; disabledReason: string | null; description: string; secret?: string }
interface Delivery { id: string; event: string; type?: string; status: string; attempts: number; nextAttemptAt: string | null; lastStatus: number | null; lastError: string | null; createdAt: string }
interface Attempt { attempt: number; startedAt: string; latencyMs: number; ok: boolean; status: number | null; error: string | null; response: string }

const line = (s: Subscription) => `${s.id}\t${s.tenant ?? '(hoster)'}\t${s.enabled ? 'enabled' : `disabled${s.disabledReason ? ` (${s.disabledReason})` : ''}`}\t${s.types.join(',')}\t${s.url}\n`;
const deliveryLine = (d: Delivery) => `${d.id}\t${d.type ?? d.event}\t${d.status}\t${d.attempts} attempt(s)\t${d.lastStatus ?? '-'}\t${d.nextAttemptAt ? `next ${d.nextAttemptAt}` : (d.lastError ?? '')}\n`;

export function registerWebhook(program: Command): void {
  const wh = program.command('webhook').description('webhook subscriptions to events, their deliveries and redelivery (signed as Standard Webhooks)');
  withConfig(wh.command('create').description('subscribe a URL to events; prints the secret (whsec_…), shown only now'))
    .requiredOption('--url <url>', 'the receiver: https, or http to a loopback address')
    .option('--tenant <name>', 'the tenant whose events it gets (default: hoster-wide, every event)')
    .option('--types <list>', 'comma-separated event types, or * for all but the opt-in ones (default *)', '*')
    .option('--description <text>', 'a note for people')
    .option('--json', 'print JSON')
    .action(async (opts: Opts & { url: string; tenant?: string; types: string; description?: string }) => {
      const types = opts.types.split(',').map((t) => t.trim()).filter((t) => t.length > 0);
      if (types.length === 0) throw ErrInvalidArgument('--types: name at least one event type, or *');
      const path = opts.tenant ? `/v1/tenants/${seg(opts.tenant)}/webhooks` : '/v1/webhooks';
      const s = await (await apiClient(opts.config)).call<Subscription>('POST', path, { url: opts.url, types, ...(opts.description ? { description: opts.description } : {}) });
      if (opts.json) return printJson(s);
      process.stdout.write(line(s));
      process.stdout.write(`secret\t${s.secret}\t(shown only now: the receiver verifies signatures with it)\n`);
    });
  withConfig(wh.command('list').description('list subscriptions'))
    .option('--tenant <name>', 'only this tenant\'s').option('--hoster', 'only the hoster-wide ones').option('--json', 'print JSON')
    .action(async (opts: Opts & { tenant?: string; hoster?: boolean }) => {
      if (opts.tenant && opts.hoster) throw ErrInvalidArgument('give --tenant or --hoster, not both');
      const q = new URLSearchParams({ ...(opts.tenant ? { tenant: opts.tenant } : {}), ...(opts.hoster ? { scope: 'hoster' } : {}) });
      const { webhooks } = await (await apiClient(opts.config)).call<{ webhooks: Subscription[] }>('GET', `/v1/webhooks?${q}`);
      if (opts.json) return printJson(webhooks);
      for (const s of webhooks) process.stdout.write(line(s));
    });
  withConfig(wh.command('delete <id>').description('delete a subscription and its deliveries')).option('--json', 'print JSON')
    .action(async (id: string, opts: Opts) => {
      await (await apiClient(opts.config)).call('DELETE', `/v1/webhooks/${seg(id)}`);
      if (opts.json) return printJson({ deleted: id });
      process.stdout.write(`deleted ${id}\n`);
    });
  for (const [name, enabled] of [['enable', true], ['disable', false]] as const) {
    withConfig(wh.command(`${name} <id>`).description(enabled ? 're-enable a subscription (after it was disabled for failing)' : 'stop deliveries to a subscription')).option('--json', 'print JSON')
      .action(async (id: string, opts: Opts) => {
        const s = await (await apiClient(opts.config)).call<Subscription>('PATCH', `/v1/webhooks/${seg(id)}`, { enabled });
        if (opts.json) return printJson(s);
        process.stdout.write(line(s));
      });
  }
  withConfig(wh.command('test <id>').description('send a webhook.test event to this subscription only')).option('--json', 'print JSON')
    .action(async (id: string, opts: Opts) => {
      const r = await (await apiClient(opts.config)).call<{ event: string; delivery: string }>('POST', `/v1/webhooks/${seg(id)}/test`, {});
      if (opts.json) return printJson(r);
      process.stdout.write(`event ${r.event}\tdelivery ${r.delivery}\t(see: webhook delivery ${id} ${r.delivery})\n`);
    });
  withConfig(wh.command('deliveries <id>').description('a subscription\'s deliveries, newest first'))
    .option('--status <status>', 'pending, succeeded or failed').option('--limit <n>', 'at most this many (default 100)').option('--json', 'print JSON')
    .action(async (id: string, opts: Opts & { status?: string; limit?: string }) => {
      const q = new URLSearchParams({ ...(opts.status ? { status: opts.status } : {}), ...(opts.limit ? { limit: opts.limit } : {}) });
      const { deliveries } = await (await apiClient(opts.config)).call<{ deliveries: Delivery[] }>('GET', `/v1/webhooks/${seg(id)}/deliveries?${q}`);
      if (opts.json) return printJson(deliveries);
      for (const d of deliveries) process.stdout.write(deliveryLine(d));
    });
  withConfig(wh.command('delivery <id> <delivery>').description('one delivery: its event and every attempt')).option('--json', 'print JSON')
    .action(async (id: string, delivery: string, opts: Opts) => {
      const d = await (await apiClient(opts.config)).call<Delivery & { attemptLog: Attempt[] }>('GET', `/v1/webhooks/${seg(id)}/deliveries/${seg(delivery)}`);
      if (opts.json) return printJson(d);
      process.stdout.write(deliveryLine(d));
      for (const a of d.attemptLog) process.stdout.write(`  #${a.attempt}\t${a.startedAt}\t${a.status ?? '-'}\t${a.latencyMs} ms\t${a.error ?? 'ok'}\t${a.response.replace(/\s+/g, ' ').slice(0, 100)}\n`);
    });
  withConfig(wh.command('redeliver <id> <delivery>').description('send an ended delivery again (same webhook-id; the retry schedule starts over)')).option('--json', 'print JSON')
    .action(async (id: string, delivery: string, opts: Opts) => {
      const d = await (await apiClient(opts.config)).call<Delivery>('POST', `/v1/webhooks/${seg(id)}/deliveries/${seg(delivery)}/redeliver`, {});
      if (opts.json) return printJson(d);
      process.stdout.write(deliveryLine(d));
    });
}
