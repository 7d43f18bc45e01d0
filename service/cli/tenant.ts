/** `lifeboat-service tenant create|list|set|allow|revoke-server` through the operator API. */
import { stat } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { ErrInvalidArgument } from '../../shared/errors.js';
import { apiClient, withConfig } from './common.js';

type Opts = { config?: string; json?: boolean };
type TenantSettings = {
  name: string; testFailoverMaxHours: number; testFailoverMaxHoursIsDefault: boolean; warnings: string[];
  quotas: { protectedVms: number | null; replicaGb: number | null; concurrentTestFailovers: number | null };
  reservation: { cpus: number | null; memoryMiB: number | null; storageGb: number | null };
};
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

  withConfig(tenant.command('set <name>').description('change a tenant\'s settings, quotas and hardware plan (docs/usage.md)'))
    .option('--test-failover-max-hours <hours>', 'how long its test failovers may run before they are stopped with their report (0.01 to 720, or "default")')
    .option('--quota-protected-vms <n>', 'most VMs it may protect ("none": no quota)')
    .option('--quota-replica-gb <gb>', 'most replica storage, in GB (10^9 bytes; "none": no quota)')
    .option('--quota-test-failovers <n>', 'most test failovers running at once ("none": no quota)')
    .option('--reserve-cpus <n>', 'hardware plan: vCPUs reserved on the failover hosts ("none": no reservation)')
    .option('--reserve-memory-mib <mib>', 'hardware plan: memory reserved, in MiB ("none")')
    .option('--reserve-storage-gb <gb>', 'hardware plan: overlay storage reserved, in GB ("none")')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: Opts & Record<string, string | undefined>) => {
      const body: Record<string, unknown> = {};
      if (opts.testFailoverMaxHours !== undefined) {
        const v = opts.testFailoverMaxHours;
        if (v !== 'default' && !/^\d{1,3}(\.\d{1,2})?$/.test(v)) throw ErrInvalidArgument(`--test-failover-max-hours ${JSON.stringify(v)}: hours (e.g. 24 or 0.5) or "default"`);
        body.testFailoverMaxHours = v === 'default' ? null : Number(v);
      }
      const limit = (option: string, flag: string, decimals: boolean): number | null | undefined => {
        const v = opts[option];
        if (v === undefined) return undefined;
        if (v === 'none') return null;
        if (!(decimals ? /^\d{1,10}(\.\d{1,3})?$/ : /^\d{1,10}$/).test(v)) throw ErrInvalidArgument(`--${flag} ${JSON.stringify(v)}: a ${decimals ? 'number' : 'whole number'} or "none"`);
        return Number(v);
      };
      const quotas = { protectedVms: limit('quotaProtectedVms', 'quota-protected-vms', false), replicaGb: limit('quotaReplicaGb', 'quota-replica-gb', true),
        concurrentTestFailovers: limit('quotaTestFailovers', 'quota-test-failovers', false) };
      const reservation = { cpus: limit('reserveCpus', 'reserve-cpus', false), memoryMiB: limit('reserveMemoryMib', 'reserve-memory-mib', false), storageGb: limit('reserveStorageGb', 'reserve-storage-gb', true) };
      const given = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
      if (Object.keys(given(quotas)).length > 0) body.quotas = given(quotas);
      if (Object.keys(given(reservation)).length > 0) body.reservation = given(reservation);
      if (Object.keys(body).length === 0) throw ErrInvalidArgument('nothing to set: give --test-failover-max-hours, a --quota-… or a --reserve-… option');
      const t = await (await apiClient(opts.config)).call<TenantSettings>('PATCH', `/v1/tenants/${seg(name)}`, body);
      if (opts.json) return printJson(t);
      const show = (v: number | null, unit: string) => (v === null ? 'none' : `${v}${unit}`);
      process.stdout.write(`tenant ${t.name}: test failovers run at most ${t.testFailoverMaxHours} h${t.testFailoverMaxHoursIsDefault ? ' (the service\'s default)' : ''}\n`
        + `  quotas: protected VMs ${show(t.quotas.protectedVms, '')}, replica storage ${show(t.quotas.replicaGb, ' GB')}, concurrent test failovers ${show(t.quotas.concurrentTestFailovers, '')}\n`
        + `  hardware plan: ${show(t.reservation.cpus, ' vCPUs')}, ${show(t.reservation.memoryMiB, ' MiB')}, ${show(t.reservation.storageGb, ' GB')} of overlay storage\n`);
      for (const w of t.warnings) process.stdout.write(`  warning: ${w}\n`);
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
