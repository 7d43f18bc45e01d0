/** lifeboat-agent disk info FILE [--json]: what an image is, from its content. */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import type { DiskInfo } from '../../shared/disk/index.js';
import { formatBytes } from '../../shared/units.js';
import { about, openImage } from './disk-common.js';

export function registerDiskInfo(disk: Command): void {
  disk
    .command('info')
    .description('show format, virtual size, block and sector sizes, allocation and parent chain of an image')
    .argument('<file>', 'the image (raw, vhd or vhdx; detected from its content)')
    .option('--json', 'print the information as JSON (sizes in bytes)')
    .action(async (file: string, opts: { json?: boolean }) => {
      const img = await openImage(file);
      const info = await about(file, async () => {
        try { return await img.info(); } finally { await img.close(); }
      });
      if (opts.json) printJson({ ...info, blockSize: info.blockSize ?? null });
      else process.stdout.write(describe(info));
    });
}

function describe(i: DiskInfo): string {
  const lines = [
    ['file', i.path],
    ['format', `${i.format} (${i.subformat})`],
    ['virtual size', `${formatBytes(i.virtualSize)} (${i.virtualSize} bytes)`],
    ['block size', i.blockSize === undefined ? '-' : formatBytes(i.blockSize)],
    ['sector size', `${i.logicalSectorSize} logical, ${i.physicalSectorSize} physical`],
    ['allocated', formatBytes(i.allocatedBytes)],
    ['parent chain', i.parentChain.length === 0 ? '-' : i.parentChain.join(' <- ')],
  ];
  return lines.map(([k, v]) => `${`${k}:`.padEnd(14)}${v}\n`).join('');
}
