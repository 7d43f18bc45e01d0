/**
 * lifeboat-agent disk compare A B: exit 0 when the virtual contents are identical, exit 1 printing
 * "differ at offset N" (the first differing byte), exit 2 on an error, as `qemu-img compare` does.
 * Disks of different sizes are identical when the larger one's extra part reads as zeros. --json prints
 * {identical, offset} (offset null when identical) with the same exit codes.
 */
import { CommanderError, type Command } from 'commander';
import { exitWith, printJson } from '../../shared/cli/run.js';
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
    .option('--json', 'print {identical, offset} as JSON (offset: the first differing byte, or null)')
    .exitOverride((err) => { throw err.exitCode === 0 ? err : new CommanderError(2, err.code, err.message); })
    .action(async (a: string, b: string, opts: { json?: boolean }) => {
      const opened: DiskImage[] = [];
      try {
        opened.push(await openImage(a));
        opened.push(await openImage(b));
        const bar = progressBar('comparing');
        const result = await compareDisks(opened[0]!, opened[1]!, { onProgress: bar.update }).finally(bar.end);
        if (opts.json) printJson({ identical: result.identical, offset: result.identical ? null : result.offset });
        else process.stdout.write(result.identical ? 'identical\n' : `differ at offset ${result.offset}\n`);
        exitWith(result.identical ? 0 : 1);
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
