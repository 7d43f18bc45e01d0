/** `lifeboat-service init --data-dir DIR [--object-store URL]`: a new data directory with defaults. */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';

export function registerInit(program: Command): void {
  program.command('init')
    .description('make a data directory with embedded defaults: config, CA, keys, operator token')
    .requiredOption('--data-dir <dir>', 'directory to create (must not hold a lifeboat.json yet)')
    .option('--object-store <url>', 'object store URL (file:///path, s3://bucket/prefix?endpoint=…, azure://…); default: DIR/objects')
    .option('--public-host <name>', 'host name agents use to reach the service (default: this machine\'s)')
    .option('--json', 'print what was made as JSON')
    .action(async (opts: { dataDir: string; objectStore?: string; publicHost?: string; json?: boolean }) => {
      const { initDataDir } = await import('../config/init.js');
      const result = await initDataDir({ dataDir: opts.dataDir, objectStore: opts.objectStore, publicHost: opts.publicHost });
      if (opts.json) return printJson(result);
      for (const m of result.made) process.stdout.write(`made ${m.what}: ${m.path}\n`);
      process.stdout.write(`next: lifeboat-service serve --config ${result.configPath}\n`);
    });
}
