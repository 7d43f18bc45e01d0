/**
 * `lifeboat-service catalog rebuild`: the catalog's VMs, disks, applied sequences, pending logs and
 * recovery points made again from replica storage and the object store (service/maintenance/
 * rebuild.ts), into a catalog whose tenants came back from a backup. Run it with serve stopped.
 */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { loadConfig } from '../config/config.js';
import { openContext } from '../context.js';
import { rebuildCatalog } from '../maintenance/rebuild.js';
import { withConfig } from './common.js';
import pino from 'pino';

export function registerCatalog(program: Command): void {
  const catalog = program.command('catalog').description('the catalog itself: rebuild it from replica storage and the object store');
  withConfig(catalog.command('rebuild').description('rebuild VMs, disks, applied sequences, pending logs and recovery points from the state files beside the replicas and the object store (tenants, users and keys come from a backup; run with serve stopped)'))
    .option('--json', 'print a JSON report')
    .action(async (opts: { config?: string; json?: boolean }) => {
      const config = await loadConfig(opts.config);
      const ctx = await openContext(config, { log: pino({ level: 'warn' }, pino.destination(2)) });
      let last = 0;
      try {
        const report = await rebuildCatalog(ctx, {
          onProgress: ({ vmsDone, vmsTotal }) => {
            const now = Date.now();
            if (vmsDone < vmsTotal && now - last < 1000) return;
            last = now;
            process.stderr.write(`catalog rebuild: ${vmsDone}/${vmsTotal} VMs\n`);
          },
        });
        if (opts.json) return printJson(report);
        process.stdout.write(`rebuilt ${report.vms} VMs (${report.disks} disks, ${report.points} recovery points, ${report.pending} pending logs) from ${report.storageRoots.join(', ')} in ${report.seconds.toFixed(1)} s`
          + `${report.kept > 0 ? `; ${report.kept} VMs were in the catalog already and were left as they are` : ''}\n`);
        for (const s of report.skipped) process.stdout.write(`skipped ${s.path}: ${s.reason}\n`);
      } finally {
        await ctx.close();
      }
    });
}
