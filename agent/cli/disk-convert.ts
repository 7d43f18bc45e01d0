/**
 * lifeboat-agent disk convert SRC DST [--format vhdx|vhd|raw] [--type] [--block-size] [--json]:
 * writes SRC's virtual contents (through its parent chain) into a new image. A progress bar goes
 * to stderr when it is a terminal. A failed convert leaves no DST behind.
 */
import { readdirSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { convertDisk } from '../../shared/disk/ops/index.js';
import { partialPathFor } from '../../shared/disk/ops/convert.js';
import { about, openImage, outputFormat, outputType, progressBar, sizeOption } from './disk-common.js';

interface ConvertFlags { format?: string; type?: string; blockSize?: string; json?: boolean }

export function registerDiskConvert(disk: Command): void {
  disk
    .command('convert')
    .description('convert an image (flattening its parent chain) into a new image of any format')
    .argument('<src>', 'the source image (format detected from its content)')
    .argument('<dst>', 'the image to write (must not exist)')
    .option('--format <format>', 'vhdx, vhd or raw (default: from the extension, else vhdx)')
    .option('--type <type>', 'VHD/VHDX subformat: dynamic (default) or fixed')
    .option('--block-size <size>', 'VHD/VHDX block size')
    .option('--json', 'print a JSON summary')
    .action(async (srcPath: string, dstPath: string, flags: ConvertFlags) => {
      const format = outputFormat(flags.format, dstPath);
      const type = outputType(flags.type, dstPath);
      const blockSize = sizeOption(flags.blockSize, 'block size');
      const src = await openImage(srcPath);
      const bar = progressBar(`converting ${srcPath}`);
      const t0 = Date.now();
      // Interrupted (Ctrl-C, kill): the image under its temporary name goes; DST was never written.
      const interrupted = (signal: NodeJS.Signals) => {
        bar.end();
        removePartials(dstPath);
        process.stderr.write(`lifeboat-agent: ${dstPath}: interrupted; nothing written\n`);
        process.exit(signal === 'SIGINT' ? 130 : 143);
      };
      for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(signal, interrupted);
      try {
        await about(dstPath, () => convertDisk(src, dstPath, format, { type, blockSize, onProgress: flags.json ? undefined : bar.update }));
      } finally {
        for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(signal, interrupted);
        bar.end();
        await src.close();
      }
      if (flags.json) printJson({ source: srcPath, destination: dstPath, format, virtualSize: src.virtualSize, seconds: (Date.now() - t0) / 1000 });
    });
}

/** Removes this process's temporary images bound for dstPath (partialPathFor names them by pid). */
function removePartials(dstPath: string): void {
  const prefix = basename(partialPathFor(dstPath));
  try {
    for (const name of readdirSync(dirname(dstPath))) if (name.startsWith(`${prefix}-`)) rmSync(join(dirname(dstPath), name), { force: true });
  } catch {
    // The folder is gone: so is the partial image.
  }
}
