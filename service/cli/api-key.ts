/**
 * `lifeboat-service api-key create|list|revoke` through the operator API (docs/api.md, API keys).
 * The key is printed once, as the last line of `create`; the service keeps only its hash.
 */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { apiClient, withConfig } from './common.js';

type Opts = { config?: string; json?: boolean };
interface Key {
  id: string; name: string; role: string; tenant: string | null; createdAt: string; createdBy: string;
  expiresAt: string | null; revokedAt: string | null; lastUsedAt: string | null;
}

const line = (k: Key) => `${k.id}  ${k.name}  ${k.role}${k.tenant ? ` of ${k.tenant}` : ''}  ${k.revokedAt ? `revoked ${k.revokedAt}` : k.expiresAt ? `expires ${k.expiresAt}` : 'never expires'}  last used ${k.lastUsedAt ?? 'never'}`;

export function registerApiKey(program: Command): void {
  const key = program.command('api-key').description('API keys: opaque bearer credentials with a role (and a tenant for tenant roles)');

  withConfig(key.command('create').description('create an API key; it is shown once'))
    .requiredOption('--name <name>', 'what the key is for (printable, up to 100 characters)')
    .requiredOption('--role <role>', 'hoster-admin, hoster-operator, tenant-admin, tenant-operator or tenant-viewer')
    .option('--tenant <name>', 'the tenant of a tenant role')
    .option('--expires-in <duration>', 'lifetime (30m, 12h, 90d; at most 3650d) or "never"', '90d')
    .option('--json', 'print JSON (the key in its "key" field)')
    .action(async (opts: Opts & { name: string; role: string; tenant?: string; expiresIn: string }) => {
      const k = await (await apiClient(opts.config)).call<Key & { key: string }>('POST', '/v1/api-keys',
        { name: opts.name, role: opts.role, expiresIn: opts.expiresIn, ...(opts.tenant === undefined ? {} : { tenant: opts.tenant }) });
      if (opts.json) return printJson(k);
      process.stdout.write(`${line(k)}\nthe key (shown only now; the service keeps its hash):\n${k.key}\n`);
    });

  withConfig(key.command('list').description('list API keys (never their secrets)'))
    .option('--tenant <name>', 'only this tenant\'s keys')
    .option('--json', 'print JSON')
    .action(async (opts: Opts & { tenant?: string }) => {
      const { keys } = await (await apiClient(opts.config)).call<{ keys: Key[] }>('GET', `/v1/api-keys${opts.tenant === undefined ? '' : `?tenant=${encodeURIComponent(opts.tenant)}`}`);
      if (opts.json) return printJson(keys);
      for (const k of keys) process.stdout.write(`${line(k)}\n`);
    });

  withConfig(key.command('revoke <id>').description('revoke an API key at once'))
    .option('--json', 'print JSON')
    .action(async (id: string, opts: Opts) => {
      const k = await (await apiClient(opts.config)).call<Key>('DELETE', `/v1/api-keys/${encodeURIComponent(id)}`);
      if (opts.json) return printJson(k);
      process.stdout.write(`revoked ${line(k)}\n`);
    });
}
