/** `lifeboat-service tenant create|list|set|allow|revoke-server` through the operator API. */
import { stat } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { ErrInvalidArgument } from '../../shared/errors.js';
import { apiClient, withConfig } from './common.js';

type Opts = { config?: string; json?: boolean };
const seg = encodeURIComponent;

export function registerTenant(program: Command): void {
  const tenant = program.command('tenant').description('tenants and the servers they authorize');

  withConfig(tenant.command('create <name>').description('create a tenant (and its replica key pair)')).option('--json', 'print JSON')
    .action(async (name: string, opts: Opts) => {
      const t = await (await apiClient(opts.config)).call<{ name: string }>('POST', '/v1/tenants', { name });
      if (opts.json) return printJson(t);
      process.stdout.write(`created tenant ${t.name}\n`);
    });

  withConfig(tenant.command('list').description('list tenants and their authorization entries')).option('--json', 'print JSON')
    .action(async (opts: Opts) => {
      const { tenants } = await (await apiClient(opts.config)).call<{ tenants: { name: string; authorizations: { pattern: string; storage: string; trustGroup: string }[] }[] }>('GET', '/v1/tenants');
      if (opts.json) return printJson(tenants);
      for (const t of tenants) {
        process.stdout.write(`${t.name}\n`);
        for (const a of t.authorizations) process.stdout.write(`  ${a.pattern}  storage=${a.storage}  trust-group=${a.trustGroup}\n`);
      }
    });

  withConfig(tenant.command('set <name>').description('change a tenant\'s settings'))
    .option('--test-failover-max-hours <hours>', 'how long its test failovers may run before they are stopped with their report (0.01 to 720, or "default")')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: Opts & { testFailoverMaxHours?: string }) => {
      const body: Record<string, unknown> = {};
      if (opts.testFailoverMaxHours !== undefined) {
        const v = opts.testFailoverMaxHours;
        if (v !== 'default' && !/^\d{1,3}(\.\d{1,2})?$/.test(v)) throw ErrInvalidArgument(`--test-failover-max-hours ${JSON.stringify(v)}: hours (e.g. 24 or 0.5) or "default"`);
        body.testFailoverMaxHours = v === 'default' ? null : Number(v);
      }
      if (Object.keys(body).length === 0) throw ErrInvalidArgument('nothing to set: give --test-failover-max-hours');
      const t = await (await apiClient(opts.config)).call<{ name: string; testFailoverMaxHours: number; testFailoverMaxHoursIsDefault: boolean }>('PATCH', `/v1/tenants/${seg(name)}`, body);
      if (opts.json) return printJson(t);
      process.stdout.write(`tenant ${t.name}: test failovers run at most ${t.testFailoverMaxHours} h${t.testFailoverMaxHoursIsDefault ? ' (the service\'s default)' : ''}\n`);
    });

  withConfig(tenant.command('allow <name>').description('authorize servers matching a pattern (at most one *) to replicate'))
    .requiredOption('--server <pattern>', 'server name pattern: hv01.contoso.com, *.contoso.com, host*, *')
    .option('--storage <dir>', 'replica storage for VMs from these servers (default: the replica root)')
    .option('--trust-group <tag>', 'servers of one trust group may take over each other\'s VMs', 'default')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: Opts & { server: string; storage?: string; trustGroup: string }) => {
      if (opts.storage !== undefined) await checkStorage(opts.storage);
      const a = await (await apiClient(opts.config)).call<{ pattern: string; storage: string; trustGroup: string }>('POST', `/v1/tenants/${seg(name)}/authorizations`,
        { pattern: opts.server, trustGroup: opts.trustGroup, ...(opts.storage ? { storage: opts.storage } : {}) });
      if (opts.json) return printJson(a);
      process.stdout.write(`tenant ${name} allows ${a.pattern} (storage ${a.storage}, trust group ${a.trustGroup})\n`);
    });

  withConfig(tenant.command('revoke-server <name> <fqdn>').description('revoke a server\'s certificates; effective at its next request')).option('--json', 'print JSON')
    .action(async (name: string, fqdn: string, opts: Opts) => {
      const r = await (await apiClient(opts.config)).call<{ server: string; revokedCertificates: number }>('POST', `/v1/tenants/${seg(name)}/revocations`, { server: fqdn });
      if (opts.json) return printJson(r);
      process.stdout.write(`revoked ${r.revokedCertificates} certificate(s) of ${r.server}\n`);
    });
}

/**
 * --storage must name an existing directory by an absolute path: a relative one would depend on where
 * the command ran, and a missing one is storage gone or unmounted (docs/service.md), which the service
 * would otherwise fill on the disk beneath.
 */
async function checkStorage(dir: string): Promise<void> {
  if (!isAbsolute(dir)) throw ErrInvalidArgument(`--storage "${dir}" must be an absolute path`);
  const s = await stat(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') throw ErrInvalidArgument(`--storage ${dir} does not exist; mount or create the replica storage first`);
    throw err;
  });
  if (!s.isDirectory()) throw ErrInvalidArgument(`--storage ${dir} is not a directory`);
}
