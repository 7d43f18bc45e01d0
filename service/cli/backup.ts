/**
 * `lifeboat-service backup OUT` and `restore IN --data-dir DIR`: the keys, the configuration and the
 * catalog in one archive encrypted under a passphrase (service/maintenance/backup.ts,
 * docs/formats/backup.md, docs/operations.md).
 */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { loadConfig } from '../config/config.js';
import { checkRestoreTarget, readBackup, readPassphrase, restoreBackup, writeBackup } from '../maintenance/backup.js';
import { withConfig } from './common.js';

const PassphraseHelp = 'file whose first line is the archive\'s passphrase, 12 characters or more (default: $LIFEBOAT_BACKUP_PASSPHRASE_FILE)';

export function registerBackup(program: Command): void {
  withConfig(program.command('backup <out>').description('write the keys, the configuration and a consistent dump of the catalog to OUT, encrypted under a passphrase (the embedded catalog: with serve stopped)'))
    .option('--passphrase-file <file>', PassphraseHelp)
    .option('--json', 'print JSON')
    .action(async (out: string, opts: { config?: string; passphraseFile?: string; json?: boolean }) => {
      const passphrase = await readPassphrase(opts.passphraseFile);
      const config = await loadConfig(opts.config);
      if (!opts.json) process.stderr.write(`backup: dumping the ${config.catalog.kind === 'pglite' ? 'embedded catalog' : 'PostgreSQL catalog (pg_dump)'} and encrypting\n`);
      const r = await writeBackup(config, out, passphrase);
      if (opts.json) return printJson(r);
      process.stdout.write(`wrote ${r.path} (${r.bytes} bytes: keys, configuration, ${r.catalog} catalog); keep the passphrase apart from it\n`);
    });
}

export function registerRestore(program: Command): void {
  program.command('restore <in>').description('make a new data directory from a backup: keys, configuration and catalog (replica storage and the object store as the backup names them)')
    .requiredOption('--data-dir <dir>', 'the new data directory (must hold no lifeboat.json)')
    .option('--passphrase-file <file>', PassphraseHelp)
    .option('--catalog-url <url>', 'a PostgreSQL catalog: the server to restore into (default: the one backed up); its schema must be empty')
    .option('--json', 'print JSON')
    .action(async (input: string, opts: { dataDir: string; passphraseFile?: string; catalogUrl?: string; json?: boolean }) => {
      await checkRestoreTarget(opts.dataDir);
      const doc = await readBackup(input, await readPassphrase(opts.passphraseFile));
      if (!opts.json) process.stderr.write(`restore: backup of ${doc.createdAt}, ${doc.catalog.kind} catalog\n`);
      const r = await restoreBackup(doc, { dataDir: opts.dataDir, catalogUrl: opts.catalogUrl });
      if (opts.json) return printJson({ ...r, createdAt: doc.createdAt });
      process.stdout.write(`restored the backup of ${doc.createdAt} into ${r.configPath} (catalog: ${r.catalog}); start it with lifeboat-service serve --config ${r.configPath}\n`);
    });
}
