/**
 * lifeboat-agent disk compare A B: exit 0 when the virtual contents are identical, exit 1 printing
 * "differ at offset N" (the first differing byte), exit 2 on an error, as `qemu-img compare` does.
 * Disks of different sizes are identical when the larger one's extra part reads as zeros.
 */
import { CommanderError, type Command } from 'commander';
import { exitWith } from '../../shared/cli/run.js';
import { userMessage } from '../../shared/errors.js';
import type { DiskImage } from '../../shared/disk/index.js';
import { compareDisks } from '../../shared/disk/ops/index.js';
import { openImage, progressBar } from './disk-common.js';

export function registerDiskCompare(disk: Command): void {
  disk
    .command('compare')
    .description('compare the virtual contents of two images (exit 0 identical, 1 different, 2 error)')
    .argument('<a>', 'first image')
    .argument('<b>', 'second image')
    .exitOverride((err) => { throw err.exitCode === 0 ? err : new CommanderError(2, err.code, err.message); })
    .action(async (a: string, b: string) => {
      const opened: DiskImage[] = [];
      try {
        opened.push(await openImage(a));
        opened.push(await openImage(b));
        const bar = progressBar('comparing');
        const result = await compareDisks(opened[0]!, opened[1]!, { onProgress: bar.update }).finally(bar.end);
        if (result.identical) {
          process.stdout.write('identical\n');
          exitWith(0);
        } else {
          process.stdout.write(`differ at offset ${result.offset}\n`);
          exitWith(1);
        }
      } catch (err) {
        const msg = userMessage(err);
        if (msg === undefined) throw err;
        process.stderr.write(`lifeboat-agent: ${msg}\n`);
        exitWith(2);
      } finally {
        for (const d of opened) await d.close().catch(() => undefined);
      }
    });
}
