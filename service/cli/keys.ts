/**
 * `lifeboat-service keys rotate|retire|list` through the operator API of the running service
 * (service/api/keys.ts, docs/security.md "Rotating keys"): the service does the rotation, so it
 * never stops serving and the embedded catalog stays in its one process.
 */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { ErrInvalidArgument } from '../../shared/errors.js';
import { apiClient, withConfig } from './common.js';

const Kinds = ['ca', 'signing', 'master', 'tenant'];
type Opts = { config?: string; json?: boolean; tenant?: string };

function checkKind(kind: string, opts: Opts): void {
  if (!Kinds.includes(kind)) throw ErrInvalidArgument(`unknown key kind ${JSON.stringify(kind.slice(0, 40))}: give ca, signing, master or tenant`);
  if (kind === 'tenant' && opts.tenant === undefined) throw ErrInvalidArgument('keys … tenant needs --tenant NAME');
  if (kind !== 'tenant' && opts.tenant !== undefined) throw ErrInvalidArgument(`--tenant applies to tenant keys only, not ${kind}`);
}

interface Rotation { kind: string; previous: string; current: string; retireAfter?: string; tenant?: string; resumed?: boolean; rewrapped?: { tenantKeys: number; webhookSecrets: number } }

function rotationLine(r: Rotation): string {
  const what = r.kind === 'tenant' ? `tenant ${r.tenant} replica key` : `${r.kind} key`;
  const after = r.retireAfter ? `; the previous one is accepted until ${r.retireAfter} or lifeboat-service keys retire ${r.kind} --old ${r.previous}` : '';
  const rewrapped = r.rewrapped ? `; ${r.rewrapped.tenantKeys} tenant key(s) and ${r.rewrapped.webhookSecrets} webhook secret(s) re-wrapped${r.resumed ? ' (an unfinished rotation resumed)' : ''}; back up now, then: lifeboat-service keys retire master` : '';
  const tenant = r.kind === 'tenant' ? `; logs sealed to ${r.previous} still merge until: lifeboat-service keys retire tenant --tenant ${r.tenant} --old ${r.previous}` : '';
  return `rotated the ${what}: ${r.previous} -> ${r.current}${after}${rewrapped}${tenant}`;
}

export function registerKeys(program: Command): void {
  const keys = program.command('keys').description('rotate and retire the service\'s keys without downtime (CA, signing, master, a tenant\'s replica key)');

  withConfig(keys.command('rotate <kind>').description('rotate a key: ca, signing, master, or tenant (with --tenant)'))
    .option('--tenant <name>', 'kind tenant: whose replica key')
    .option('--overlap <duration>', 'ca and signing: how long the previous key stays accepted (default: ca the certificate validity, signing 30d)')
    .option('--json', 'print JSON')
    .action(async (kind: string, opts: Opts & { overlap?: string }) => {
      checkKind(kind, opts);
      const body = { ...(opts.tenant === undefined ? {} : { tenant: opts.tenant }), ...(opts.overlap === undefined ? {} : { overlap: opts.overlap }) };
      const r = await (await apiClient(opts.config)).call<Rotation>('POST', `/v1/keys/${kind}/rotations`, body);
      if (opts.json) return printJson(r);
      process.stdout.write(`${rotationLine({ ...r, ...(opts.tenant === undefined ? {} : { tenant: opts.tenant }) })}\n`);
    });

  withConfig(keys.command('retire <kind>').description('retire what a rotation kept: the previous CA, signing key, master key or tenant replica key'))
    .option('--old <id>', 'the previous key: CA fingerprint (ca), kid (signing, tenant); master takes none')
    .option('--tenant <name>', 'kind tenant: whose replica key')
    .option('--force', 'ca: although agents have not renewed; tenant: although logs are not merged yet')
    .option('--json', 'print JSON')
    .action(async (kind: string, opts: Opts & { old?: string; force?: boolean }) => {
      checkKind(kind, opts);
      if (kind !== 'master' && opts.old === undefined) throw ErrInvalidArgument(`keys retire ${kind} needs --old ID (lifeboat-service keys list shows it)`);
      const body = { ...(opts.old === undefined ? {} : { id: opts.old }), ...(opts.tenant === undefined ? {} : { tenant: opts.tenant }), ...(opts.force ? { force: true } : {}) };
      const r = await (await apiClient(opts.config)).call<{ kind: string; retired: string; certificatesRefused?: number }>('POST', `/v1/keys/${kind}/retirements`, body);
      if (opts.json) return printJson(r);
      process.stdout.write(`retired the previous ${kind === 'tenant' ? `tenant ${opts.tenant} replica` : kind} key ${r.retired}${r.certificatesRefused ? ` (${r.certificatesRefused} agent certificate(s) of other CAs are now refused)` : ''}\n`);
    });

  withConfig(keys.command('list').description('the current keys and those kept from rotations'))
    .option('--json', 'print JSON')
    .action(async (opts: Opts) => {
      const s = await (await apiClient(opts.config)).call<{
        ca: { current: string; previous: { id: string; retireAfter: string; live: boolean }[]; agentsNotRenewed: number };
        signing: { current: string; previous: { id: string; retireAfter: string; live: boolean }[] };
        master: { current: string; previous: string | null };
        tenants: { tenant: string; previous: string; replacedAt: string }[];
      }>('GET', '/v1/keys');
      if (opts.json) return printJson(s);
      const prev = (p: { id: string; retireAfter: string; live: boolean }[]) => p.filter((k) => k.live).map((k) => `${k.id} (until ${k.retireAfter})`).join(', ') || 'none';
      process.stdout.write(`ca       ${s.ca.current}; previous still trusted: ${prev(s.ca.previous)}; agents not renewed since the last rotation: ${s.ca.agentsNotRenewed}\n`);
      process.stdout.write(`signing  ${s.signing.current}; previous still accepted: ${prev(s.signing.previous)}\n`);
      process.stdout.write(`master   ${s.master.current}; previous kept: ${s.master.previous ?? 'none'}\n`);
      for (const t of s.tenants) process.stdout.write(`tenant   ${t.tenant}: previous replica key ${t.previous} kept since ${t.replacedAt}\n`);
    });
}
