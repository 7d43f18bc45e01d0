/**
 * `lifeboat-service import-media --tenant T --dir DIR`: loads the bases an agent wrote to external
 * media (docs/formats/agent-media.md) into the running service, one API call per disk
 * (POST /v1/tenants/T/media-imports). The service reads DIR on its own host, like export writes there:
 * the CLI only finds the disks on the media and refuses media of another tenant up front.
 */
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { LifeboatError } from '../../shared/errors.js';
import type { ImportResult } from '../api/import-media.js';
import { idPattern } from '../http/json.js';
import { apiClient, withConfig } from './common.js';

interface MediaBaseRef { vm: string; disk: string; generation: number }

async function subdirs(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new LifeboatError('io', `cannot read ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

/** The bases of tenant on the media, in (vm, disk, generation) order; refuses media of another tenant. */
export async function findMediaBases(dir: string, tenant: string): Promise<MediaBaseRef[]> {
  const root = join(dir, 'lifeboat-media');
  const tenants = await subdirs(root);
  if (tenants.length === 0) throw new LifeboatError('not_found', `${dir} holds no lifeboat media (no ${root} with bases)`);
  if (!tenants.includes(tenant)) throw new LifeboatError('invalid_argument', `media in ${dir} belongs to tenant ${tenants.join(', ')}, not ${tenant}`);
  const found: MediaBaseRef[] = [];
  for (const vm of (await subdirs(join(root, tenant))).filter((n) => idPattern.test(n))) {
    for (const disk of (await subdirs(join(root, tenant, vm))).filter((n) => idPattern.test(n))) {
      for (const g of (await subdirs(join(root, tenant, vm, disk))).filter((n) => /^[0-9a-f]{16}$/.test(n))) {
        found.push({ vm, disk, generation: Number.parseInt(g, 16) });
      }
    }
  }
  if (found.length === 0) throw new LifeboatError('not_found', `${join(root, tenant)} holds no bases`);
  return found;
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

export function registerImportMedia(program: Command): void {
  withConfig(program.command('import-media').description('load the initial copies an agent wrote to external media (--initial media:DIR) into the replicas'))
    .requiredOption('--tenant <name>', 'tenant whose media this is (must match the media)')
    .requiredOption('--dir <dir>', 'the media directory (as given to the agent\'s --initial media:DIR), readable by the service')
    .option('--json', 'print a JSON summary')
    .action(async (opts: { config?: string; tenant: string; dir: string; json?: boolean }) => {
      const dir = resolve(opts.dir);
      const bases = await findMediaBases(dir, opts.tenant);
      const api = await apiClient(opts.config);
      const tty = !opts.json && process.stderr.isTTY;
      const results: ImportResult[] = [];
      try {
        for (const [i, b] of bases.entries()) {
          if (tty) process.stderr.write(`\r\x1b[Kimporting ${b.vm}/${b.disk} generation ${b.generation} (${i + 1}/${bases.length})`);
          results.push(await api.call<ImportResult>('POST', `/v1/tenants/${encodeURIComponent(opts.tenant)}/media-imports`, { dir, ...b }));
        }
      } finally {
        if (tty) process.stderr.write('\r\x1b[K');
      }
      if (opts.json) return printJson({ tenant: opts.tenant, dir, disks: results });
      for (const r of results) {
        const what = r.status === 'duplicate' ? 'already imported' : `imported ${r.chunks} chunks (${r.stored} stored now, ${mib(r.bytes)})`;
        process.stdout.write(`${r.tenant}/${r.vm}/${r.disk} generation ${r.generation} (${r.mode}): ${what}; the merge applies it\n`);
      }
    });
}
