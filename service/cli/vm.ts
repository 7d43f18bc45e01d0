/** `lifeboat-service vm list [--tenant T] [--json]`, and `vm nic …` (nic.ts). */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { apiClient, withConfig } from './common.js';
import { registerNic } from './nic.js';

interface VmSummary { tenant: string; name: string; state: string; health: string; lastAppliedAt: string | null; pendingLogs: number; quotaWarnings?: string[] }

export function registerVm(program: Command): void {
  const vm = program.command('vm').description('protected VMs');
  withConfig(vm.command('list').description('list VMs with state, health, last applied time and pending logs'))
    .option('--tenant <name>', 'only this tenant\'s VMs')
    .option('--json', 'print JSON')
    .action(async (opts: { config?: string; tenant?: string; json?: boolean }) => {
      const q = opts.tenant ? `?tenant=${encodeURIComponent(opts.tenant)}` : '';
      const { vms } = await (await apiClient(opts.config)).call<{ vms: VmSummary[] }>('GET', `/v1/vms${q}`);
      if (opts.json) return printJson(vms);
      for (const v of vms) process.stdout.write(`${v.tenant}\t${v.name}\t${v.state}\t${v.health}\t${v.lastAppliedAt ?? '-'}\tpending ${v.pendingLogs}\n`);
      // A tenant over a quota replicates on; the list says so once per tenant.
      const told = new Set<string>();
      for (const v of vms) {
        if (told.has(v.tenant)) continue;
        told.add(v.tenant);
        for (const w of v.quotaWarnings ?? []) process.stdout.write(`warning: tenant ${v.tenant}: ${w}\n`);
      }
    });
  registerNic(vm);
}
