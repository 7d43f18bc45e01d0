/**
 * `lifeboat-service failback FAILOVER [--shutdown-timeout 5m] [--wait] [--status] [--json]` (a client
 * of the running service's API, docs/failback.md): asks the failover's VM to come home and prints the
 * failback's report; --wait follows it until it ends (exit 1 when it failed); --status prints the
 * newest failback's report without asking for one.
 */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { LifeboatError } from '../../shared/errors.js';
import { parseDuration } from '../../shared/units.js';
import type { FailbackReport } from '../failback/report.js';
import { apiClient, withConfig } from './common.js';

type Opts = { config?: string; json?: boolean; wait?: boolean; status?: boolean; shutdownTimeout: string };

function printReport(r: FailbackReport): void {
  const line = (k: string, v: unknown) => process.stdout.write(`${k.padEnd(14)}${v === null || v === undefined ? '-' : String(v)}\n`);
  line('failback', r.id);
  line('failover', r.failover);
  line('vm', `${r.tenant}/${r.vm}`);
  line('state', r.state);
  line('window', r.windowSeconds === null ? null : `${r.windowSeconds} s (stop at the hoster to started at home)`);
  const eq = r.equality as { equal: boolean; disks: { disk: string; bytesCompared: number }[] } | null;
  if (eq) line('equality', `${eq.equal ? 'equal' : 'DIFFERENT'}: ${eq.disks.map((d) => `${d.disk} ${d.bytesCompared} bytes compared`).join(', ')}`);
  if (r.error) line('error', r.error);
  for (const s of r.steps) process.stdout.write(`  ${s.startedAt}  ${s.step.padEnd(12)} ${s.status.padEnd(8)}${s.seconds !== null ? ` ${s.seconds} s` : ''}${s.detail ? `  ${s.detail}` : ''}\n`);
}

export function registerFailback(program: Command): void {
  withConfig(program.command('failback <failover>').description('bring a committed failover\'s VM home: stop it here, ship its last writes, the agent confirms equality and starts it'))
    .option('--shutdown-timeout <duration>', 'how long the guest may take to power off before its vCPUs are stopped', '5m')
    .option('--wait', 'follow the failback until it ends (exit 1 when it failed)')
    .option('--status', 'print the newest failback\'s report; ask for nothing')
    .option('--json', 'print the report as JSON')
    .action(async (failover: string, opts: Opts) => {
      const api = await apiClient(opts.config);
      const path = `/v1/failovers/${encodeURIComponent(failover)}/failback`;
      const seconds = parseDuration(opts.shutdownTimeout, '--shutdown-timeout') / 1000;
      let r = opts.status ? await api.call<FailbackReport>('GET', path) : await api.call<FailbackReport>('POST', path, { shutdownTimeoutSeconds: Math.round(seconds) });
      while (opts.wait && r.endedAt === null) {
        await new Promise((res) => setTimeout(res, 2000));
        r = await api.call<FailbackReport>('GET', path);
      }
      if (opts.json) printJson(r);
      else printReport(r);
      if (opts.wait && r.result === 'failed') throw new LifeboatError('conflict', `failback ${r.id} failed: ${r.error ?? 'no reason recorded'}`);
    });
}
