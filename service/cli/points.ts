/** `lifeboat-service points --tenant T VM [--json]`: a VM's recovery points. */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { apiClient, withConfig } from './common.js';

export function registerPoints(program: Command): void {
  withConfig(program.command('points <vm>').description('list a VM\'s recovery points'))
    .requiredOption('--tenant <name>', 'the VM\'s tenant')
    .option('--json', 'print JSON')
    .action(async (vm: string, opts: { config?: string; tenant: string; json?: boolean }) => {
      const { points } = await (await apiClient(opts.config)).call<{ points: { id: string; createdAt: string; consistency: string; latest: boolean }[] }>(
        'GET', `/v1/tenants/${encodeURIComponent(opts.tenant)}/vms/${encodeURIComponent(vm)}/points`);
      if (opts.json) return printJson(points);
      for (const p of points) process.stdout.write(`${p.id}\t${p.createdAt}\t${p.consistency}${p.latest ? '\tlatest' : ''}\n`);
    });
}
