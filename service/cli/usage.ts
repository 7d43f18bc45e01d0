/** `lifeboat-service usage [--from --to --tenant] [--csv|--json]`: metered usage through the operator API (docs/usage.md). */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { ErrInvalidArgument } from '../../shared/errors.js';
import type { UsageReport } from '../usage/report.js';
import { apiClient, withConfig } from './common.js';

type Opts = { config?: string; from?: string; to?: string; tenant?: string; csv?: boolean; json?: boolean };

/** The columns of the plain table: the quantities with their short unit. */
const Columns: [keyof UsageReport['tenants'][number]['total'], string][] = [
  ['protectedVmHours', 'protected VM-h'], ['replicaGbHours', 'replica GB-h'], ['bytesReceived', 'bytes in'], ['testFailoverVmHours', 'test VM-h'],
  ['failoverVmHours', 'failover VM-h'], ['vcpuHours', 'vCPU-h'], ['memoryGibHours', 'memory GiB-h'], ['windowsVmHours', 'Windows VM-h'],
  ['publicIpHours', 'public IP-h'], ['planRuns', 'plan runs'],
];

export function registerUsage(program: Command): void {
  withConfig(program.command('usage').description('metered usage per tenant and UTC day'))
    .option('--from <date>', 'first day (2026-12-01) or a time with its zone (default: the first of this month)')
    .option('--to <date>', 'end, exclusive (default: now)')
    .option('--tenant <name>', 'one tenant (default: every tenant)')
    .option('--csv', 'print CSV: a header, then one row per tenant and day')
    .option('--json', 'print JSON')
    .action(async (opts: Opts) => {
      if (opts.csv && opts.json) throw ErrInvalidArgument('give --csv or --json, not both');
      const q = new URLSearchParams();
      for (const k of ['from', 'to', 'tenant'] as const) if (opts[k] !== undefined) q.set(k, opts[k]);
      const client = await apiClient(opts.config);
      const path = `/v1/usage${q.size > 0 ? `?${q.toString()}` : ''}`;
      if (opts.csv) {
        process.stdout.write(await client.getText(path, 'text/csv'));
        return;
      }
      const report = await client.call<UsageReport>('GET', path);
      if (opts.json) return printJson(report);
      process.stdout.write(`usage from ${report.from} until ${report.until} (UTC days)\n`);
      if (report.tenants.length === 0) process.stdout.write('nothing metered\n');
      for (const t of report.tenants) {
        const rows = [...t.days.map((d) => [d.day, ...Columns.map(([f]) => String(d[f]))]), ['total', ...Columns.map(([f]) => String(t.total[f]))]];
        const head = ['day', ...Columns.map(([, h]) => h)];
        const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
        const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(width[i]!) : c.padStart(width[i]!))).join('  ');
        process.stdout.write(`\n${t.tenant}\n${line(head)}\n${rows.map(line).join('\n')}\n`);
      }
    });
}
