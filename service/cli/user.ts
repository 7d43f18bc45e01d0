/**
 * `lifeboat-service user create|list|set-role|remove|reset-link`: the portal's local users, through
 * the operator API. A password is never an argument (it would sit in the shell's history and the
 * process list): give it on standard input with --password-stdin, or send the user a reset link.
 */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { ErrInvalidArgument } from '../../shared/errors.js';
import { apiClient, withConfig } from './common.js';

type Opts = { config?: string; json?: boolean };
type User = { username: string; tenant: string | null; role: string; hasPassword: boolean; createdAt: string };
const seg = encodeURIComponent;
const Roles = 'hoster-admin, hoster-operator, tenant-admin, tenant-operator, tenant-viewer';

async function readPassword(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  if (text.length === 0) throw ErrInvalidArgument('--password-stdin: standard input held no password');
  return text;
}

export function registerUser(program: Command): void {
  const user = program.command('user').description('local users of the tenant portal and their roles');

  withConfig(user.command('create <username>').description('create a portal user (a tenant\'s, with --tenant, or the hoster\'s)'))
    .requiredOption('--role <role>', `one of ${Roles}`)
    .option('--tenant <name>', 'the tenant of a tenant-* role')
    .option('--password-stdin', 'read the password from standard input (else: send a reset link)')
    .option('--json', 'print JSON')
    .action(async (username: string, opts: Opts & { role: string; tenant?: string; passwordStdin?: boolean }) => {
      const body = { username, role: opts.role, ...(opts.tenant ? { tenant: opts.tenant } : {}), ...(opts.passwordStdin ? { password: await readPassword() } : {}) };
      const u = await (await apiClient(opts.config)).call<User>('POST', '/v1/users', body);
      if (opts.json) return printJson(u);
      process.stdout.write(`created user ${u.username} (${u.role}${u.tenant ? ` of tenant ${u.tenant}` : ''})${u.hasPassword ? '' : `; no password yet: lifeboat-service user reset-link ${u.username}`}\n`);
    });

  withConfig(user.command('list').description('list portal users')).option('--tenant <name>', 'only this tenant\'s').option('--json', 'print JSON')
    .action(async (opts: Opts & { tenant?: string }) => {
      const { users } = await (await apiClient(opts.config)).call<{ users: User[] }>('GET', `/v1/users${opts.tenant ? `?tenant=${seg(opts.tenant)}` : ''}`);
      if (opts.json) return printJson(users);
      for (const u of users) process.stdout.write(`${u.username}  ${u.role}  ${u.tenant ?? '(hoster)'}${u.hasPassword ? '' : '  (no password yet)'}\n`);
    });

  withConfig(user.command('set-role <username> <role>').description(`change a user's role (${Roles}); ends the user's sessions`)).option('--json', 'print JSON')
    .action(async (username: string, role: string, opts: Opts) => {
      const u = await (await apiClient(opts.config)).call<User>('PATCH', `/v1/users/${seg(username)}`, { role });
      if (opts.json) return printJson(u);
      process.stdout.write(`user ${u.username} is now ${u.role}\n`);
    });

  withConfig(user.command('remove <username>').description('remove a user; ends the user\'s sessions')).option('--json', 'print JSON')
    .action(async (username: string, opts: Opts) => {
      const r = await (await apiClient(opts.config)).call<{ username: string }>('DELETE', `/v1/users/${seg(username)}`);
      if (opts.json) return printJson(r);
      process.stdout.write(`removed user ${r.username}\n`);
    });

  withConfig(user.command('reset-link <username>').description('a one-time link that sets the user\'s password (the link is the last line printed)'))
    .option('--ttl <duration>', 'how long the link works (1m to 7d)', '24h').option('--json', 'print JSON')
    .action(async (username: string, opts: Opts & { ttl: string }) => {
      const r = await (await apiClient(opts.config)).call<{ username: string; url: string; expiresAt: string }>('POST', `/v1/users/${seg(username)}/reset-links`, { ttl: opts.ttl });
      if (opts.json) return printJson(r);
      process.stdout.write(`password reset link for ${r.username}, usable once until ${r.expiresAt}:\n${r.url}\n`);
    });
}
