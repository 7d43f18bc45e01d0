/**
 * `lifeboat-service network …`: the hoster's DR networks, their grants, a tenant's network mappings
 * and bulk NIC settings as CSV, through the running service's API (docs/failover-network.md):
 *   network create NAME --bridge BR [--vlan N] [--kind production|test] [--host H …]
 *   network grant NAME --tenant T | network revoke NAME --tenant T | network delete NAME
 *   network list [--tenant T] [--json]
 *   network mapping add --tenant T --kind K --source CIDR --target CIDR [--gateway IP] [--dns IP …] [--search D …] [--network NAME]
 *   network mapping list --tenant T [--json] | network mapping remove --tenant T (--kind K --source CIDR | --all)
 *   network import --tenant T FILE.csv [--dry-run]      every row applies or none; each bad row one line
 *   network export --tenant T [FILE]
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { ErrInvalidArgument } from '../../shared/errors.js';
import type { NetworkMapping } from '../failover/network/mappings.js';
import { networkNameReason } from '../failover/network/names.js';
import { apiClient, withConfig } from './common.js';
import { callDelete } from './nic.js';

type Opts = { config?: string; json?: boolean };
const seg = encodeURIComponent;
const many = (v: string, acc: string[]) => [...acc, v];

interface Network { name: string; kind: string; bridge: string; vlan: number | null; hosts: string[]; tenants: string[] }

function networkLine(n: Network): string {
  return `${n.name}\t${n.kind}\tbridge ${n.bridge}${n.vlan === null ? '' : ` vlan ${n.vlan}`}\thosts ${n.hosts.length ? n.hosts.join(',') : 'all'}\ttenants ${n.tenants.length ? n.tenants.join(',') : '-'}\n`;
}

function mappingLine(m: NetworkMapping): string {
  const extra = [m.gateway ? `gw ${m.gateway}` : '', m.dns.length ? `dns ${m.dns.join(' ')}` : '', m.search.length ? `search ${m.search.join(' ')}` : '', m.network ? `network ${m.network}` : ''];
  return `${m.kind}\t${m.source} → ${m.target}\t${extra.filter(Boolean).join('  ')}\n`;
}

export function registerNetwork(program: Command): void {
  const net = program.command('network').description('DR networks (hoster-owned, granted to tenants), network mappings and bulk NIC settings');

  withConfig(net.command('create <name>').description('create a DR network: a bridge (and VLAN) on the failover hosts'))
    .requiredOption('--bridge <bridge>', 'the Linux bridge on the failover hosts').option('--vlan <n>', 'the VLAN on that bridge (1 to 4094)')
    .option('--kind <kind>', 'production or test', 'production').option('--host <name>', 'a failover host that carries it (repeatable; none: every host)', many, [] as string[])
    .option('--json', 'print JSON')
    .action(async (name: string, o: Opts & { bridge: string; vlan?: string; kind: string; host: string[] }) => {
      const bad = networkNameReason(name);
      if (bad) throw ErrInvalidArgument(bad);
      if (o.vlan !== undefined && !/^\d{1,4}$/.test(o.vlan)) throw ErrInvalidArgument(`--vlan ${JSON.stringify(o.vlan)} is not a number from 1 to 4094`);
      const n = await (await apiClient(o.config)).call<Network>('POST', '/v1/networks',
        { name, kind: o.kind, bridge: o.bridge, ...(o.vlan === undefined ? {} : { vlan: Number(o.vlan) }), hosts: o.host });
      if (o.json) return printJson(n);
      process.stdout.write(`created network ${n.name} (${n.kind}, bridge ${n.bridge}${n.vlan === null ? '' : ` vlan ${n.vlan}`})\n`);
    });
  withConfig(net.command('grant <name>').description('let a tenant attach its VMs\' NICs to a DR network'))
    .requiredOption('--tenant <name>', 'the tenant').option('--json', 'print JSON')
    .action(async (name: string, o: Opts & { tenant: string }) => {
      const n = await (await apiClient(o.config)).call<Network>('POST', `/v1/networks/${seg(name)}/grants`, { tenant: o.tenant });
      if (o.json) return printJson(n);
      process.stdout.write(`granted network ${n.name} to tenant ${o.tenant}\n`);
    });
  withConfig(net.command('revoke <name>').description('take a DR network back from a tenant (refused while its NICs or mappings name it)'))
    .requiredOption('--tenant <name>', 'the tenant')
    .action(async (name: string, o: Opts & { tenant: string }) => {
      await callDelete(await apiClient(o.config), `/v1/networks/${seg(name)}/grants/${seg(o.tenant)}`);
      process.stdout.write(`revoked network ${name} from tenant ${o.tenant}\n`);
    });
  withConfig(net.command('delete <name>').description('delete a DR network no tenant is granted'))
    .action(async (name: string, o: Opts) => {
      await callDelete(await apiClient(o.config), `/v1/networks/${seg(name)}`);
      process.stdout.write(`deleted network ${name}\n`);
    });
  withConfig(net.command('list').description('DR networks with their bridges, VLANs, hosts and tenants'))
    .option('--tenant <name>', 'only those granted to this tenant').option('--json', 'print JSON')
    .action(async (o: Opts & { tenant?: string }) => {
      const q = o.tenant ? `?tenant=${seg(o.tenant)}` : '';
      const { networks } = await (await apiClient(o.config)).call<{ networks: Network[] }>('GET', `/v1/networks${q}`);
      if (o.json) return printJson(networks);
      for (const n of networks) process.stdout.write(networkLine(n));
    });

  const mapping = net.command('mapping').description('a tenant\'s network mappings: source subnet → DR subnet, host part kept');
  const mappingsPath = (tenant: string) => `/v1/tenants/${seg(tenant)}/network-mappings`;
  withConfig(mapping.command('add').description('add a mapping (the tenant\'s whole set is validated again)'))
    .requiredOption('--tenant <name>', 'the tenant').requiredOption('--kind <kind>', 'production or test')
    .requiredOption('--source <cidr>', 'the subnet on the tenant\'s site, e.g. 192.168.10.0/24').requiredOption('--target <cidr>', 'the DR subnet, same prefix length, e.g. 10.50.10.0/24')
    .option('--gateway <ip>', 'the DR subnet\'s gateway').option('--dns <ip>', 'a DNS server (repeatable)', many, [] as string[])
    .option('--search <domain>', 'a search domain (repeatable)', many, [] as string[]).option('--network <name>', 'the DR network (granted to the tenant) mapped NICs attach to')
    .option('--json', 'print JSON')
    .action(async (o: Opts & { tenant: string; kind: string; source: string; target: string; gateway?: string; dns: string[]; search: string[]; network?: string }) => {
      const { mappings } = await (await apiClient(o.config)).call<{ mappings: NetworkMapping[] }>('POST', mappingsPath(o.tenant), {
        kind: o.kind, source: o.source, target: o.target, ...(o.gateway ? { gateway: o.gateway } : {}), dns: o.dns, search: o.search, ...(o.network ? { network: o.network } : {}),
      });
      if (o.json) return printJson(mappings);
      process.stdout.write(`tenant ${o.tenant} has ${mappings.length} mapping(s)\n`);
    });
  withConfig(mapping.command('list').description('a tenant\'s mappings'))
    .requiredOption('--tenant <name>', 'the tenant').option('--json', 'print JSON')
    .action(async (o: Opts & { tenant: string }) => {
      const { mappings } = await (await apiClient(o.config)).call<{ mappings: NetworkMapping[] }>('GET', mappingsPath(o.tenant));
      if (o.json) return printJson(mappings);
      for (const m of mappings) process.stdout.write(mappingLine(m));
    });
  withConfig(mapping.command('remove').description('remove one mapping (--kind and --source) or all (--all)'))
    .requiredOption('--tenant <name>', 'the tenant').option('--kind <kind>', 'production or test').option('--source <cidr>', 'the mapping\'s source subnet').option('--all', 'remove every mapping of the tenant')
    .action(async (o: Opts & { tenant: string; kind?: string; source?: string; all?: boolean }) => {
      const one = o.kind !== undefined && o.source !== undefined;
      if (one === Boolean(o.all) || (!one && (o.kind !== undefined || o.source !== undefined))) throw ErrInvalidArgument('give --kind and --source to remove one mapping, or --all');
      const q = one ? `?kind=${seg(o.kind!)}&source=${seg(o.source!)}` : '';
      const { mappings } = await callDelete<{ mappings: NetworkMapping[] }>(await apiClient(o.config), `${mappingsPath(o.tenant)}${q}`);
      process.stdout.write(`tenant ${o.tenant} has ${mappings.length} mapping(s) left\n`);
    });

  withConfig(net.command('import <file>').description('set NIC settings from a CSV (vm,mac,kind,addresses,gateway,dns,network[,search,mtu,model]): every row applies or none'))
    .requiredOption('--tenant <name>', 'the tenant').option('--dry-run', 'check the whole file, store nothing').option('--json', 'print JSON')
    .action(async (file: string, o: Opts & { tenant: string; dryRun?: boolean }) => {
      const csv = await readFile(file, 'utf8');
      const r = await (await apiClient(o.config)).call<{ dryRun: boolean; rows: number; vms: string[]; nics: number }>('POST', `/v1/tenants/${seg(o.tenant)}/nic-settings/import`, { csv, dryRun: Boolean(o.dryRun) });
      if (o.json) return printJson(r);
      process.stdout.write(`${r.dryRun ? 'dry run: all' : 'imported'} ${r.rows} row(s)${r.dryRun ? ' would apply' : ''}: ${r.vms.length} VM(s), ${r.nics} NIC(s)\n`);
    });
  withConfig(net.command('export [file]').description('write the tenant\'s NIC settings as CSV (to FILE, else stdout)'))
    .requiredOption('--tenant <name>', 'the tenant')
    .action(async (file: string | undefined, o: Opts & { tenant: string }) => {
      const { csv } = await (await apiClient(o.config)).call<{ csv: string }>('GET', `/v1/tenants/${seg(o.tenant)}/nic-settings/export`);
      if (file === undefined) process.stdout.write(csv); else await writeFile(file, csv);
    });
}
