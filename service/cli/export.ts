/**
 * `lifeboat-service export --tenant T --vm VM --disk N [--point ID|latest] [--format vhdx|raw] OUT`;
 * the format defaults to OUT's extension (.vhdx, .raw or .img).
 */
import { extname, resolve } from 'node:path';
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { ErrInvalidArgument } from '../../shared/errors.js';
import { apiClient, withConfig } from './common.js';

export function registerExport(program: Command): void {
  withConfig(program.command('export <out>').description('write a flat image of a replica disk at a recovery point (the service writes OUT on its host)'))
    .requiredOption('--tenant <name>', 'tenant')
    .requiredOption('--vm <vm>', 'VM')
    .requiredOption('--disk <id>', 'disk id')
    .option('--point <id>', 'recovery point id, or latest', 'latest')
    .option('--format <format>', 'vhdx or raw (default: from the extension of OUT)')
    .option('--json', 'print JSON')
    .action(async (out: string, opts: { config?: string; tenant: string; vm: string; disk: string; point: string; format?: string; json?: boolean }) => {
      const format = opts.format ?? formatOf(out);
      const r = await (await apiClient(opts.config)).call<{ path: string; virtualSize: number }>('POST',
        `/v1/tenants/${encodeURIComponent(opts.tenant)}/vms/${encodeURIComponent(opts.vm)}/exports`,
        { disk: opts.disk, point: opts.point, format, path: resolve(out) });
      if (opts.json) return printJson(r);
      process.stdout.write(`exported ${opts.tenant}/${opts.vm}/${opts.disk} at ${opts.point} to ${r.path} (${r.virtualSize} bytes)\n`);
    });
}

/** The export format named by OUT's extension; one clear line when it names none. */
export function formatOf(out: string): 'vhdx' | 'raw' {
  const ext = extname(out).toLowerCase();
  if (ext === '.vhdx') return 'vhdx';
  if (ext === '.raw' || ext === '.img') return 'raw';
  throw ErrInvalidArgument(`${out}: give --format vhdx or raw (the name ends in neither .vhdx nor .raw)`);
}
