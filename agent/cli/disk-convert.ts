/**
 * lifeboat-agent disk convert SRC DST [--format vhdx|vhd|raw] [--type] [--block-size] [--json]:
 * writes SRC's virtual contents (through its parent chain) into a new image. A progress bar goes
 * to stderr when it is a terminal. A failed convert leaves no DST behind.
 */
import { existsSync, rmSync } from 'node:fs';
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { convertDisk } from '../../shared/disk/ops/index.js';
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
      // Interrupted, the partial output goes too (convertDisk removes it on any failure it sees).
      const interrupted = () => {
        bar.end();
        if (existsSync(dstPath) && !existedBefore) rmSync(dstPath, { force: true });
        process.stderr.write(`lifeboat-agent: ${dstPath}: interrupted; removed the partial output\n`);
        process.exit(130);
      };
      const existedBefore = existsSync(dstPath);
      process.once('SIGINT', interrupted);
      try {
        await about(dstPath, () => convertDisk(src, dstPath, format, { type, blockSize, onProgress: flags.json ? undefined : bar.update }));
      } finally {
        process.off('SIGINT', interrupted);
        bar.end();
        await src.close();
      }
      if (flags.json) printJson({ source: srcPath, destination: dstPath, format, virtualSize: src.virtualSize, seconds: (Date.now() - t0) / 1000 });
    });
}
