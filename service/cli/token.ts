/** `lifeboat-service token create --tenant NAME [--ttl 1h]`: the token is the last line printed. */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { apiClient, withConfig } from './common.js';

export function registerToken(program: Command): void {
  const token = program.command('token').description('one-time enrollment tokens');
  withConfig(token.command('create').description('create a one-time enrollment token for a tenant'))
    .requiredOption('--tenant <name>', 'tenant the enrolling server joins')
    .option('--ttl <duration>', 'lifetime (30m, 1h, 2d; at most 7d)', '1h')
    .option('--json', 'print JSON')
    .action(async (opts: { config?: string; tenant: string; ttl: string; json?: boolean }) => {
      const t = await (await apiClient(opts.config)).call<{ token: string; expiresAt: string; endpoint: string; caFingerprint: string }>(
        'POST', `/v1/tenants/${encodeURIComponent(opts.tenant)}/tokens`, { ttl: opts.ttl });
      if (opts.json) return printJson(t);
      process.stdout.write(`enrollment token for tenant ${opts.tenant}, valid until ${t.expiresAt}, endpoint ${t.endpoint}, CA sha256 ${t.caFingerprint}:\n${t.token}\n`);
    });
}
