/**
 * `lifeboat-service public-ip …`: the hoster's pools of public addresses, their grants to tenants,
 * and each tenant's 1:1 mappings of a granted address to a VM, through the running service's API
 * (docs/failover-public-ips.md):
 *   public-ip pool create NAME --address A|PREFIX … | pool delete NAME
 *   public-ip pool grant NAME --tenant T (--count N | --address A …) | pool revoke NAME --tenant T [--address A]
 *   public-ip pool list [--tenant T] [--json]
 *   public-ip map ADDRESS --tenant T --vm VM (--mac MAC | --dr-address IP) [--allow tcp/22 …] [--test] [--replace] [--json]
 *   public-ip unmap ADDRESS --tenant T
 *   public-ip list --tenant T [--json]      the tenant's addresses, each with its mapping
 */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { ErrInvalidArgument } from '../../shared/errors.js';
import { apiClient, withConfig } from './common.js';
import { callDelete } from './nic.js';

type Opts = { config?: string; json?: boolean };
const seg = encodeURIComponent;
const many = (v: string, acc: string[]) => [...acc, ...v.split(',').map((x) => x.trim()).filter((x) => x.length > 0)];

interface Pool { name: string; total: number; free: number; addresses: { address: string; tenant: string | null; vm: string | null }[] }
interface Mapping { address: string; vm: string; mac: string | null; drAddress: string | null; allow: string[]; test: boolean }

function poolLines(p: Pool): string {
  const head = `${p.name}\t${p.total} address(es), ${p.free} free\n`;
  return head + p.addresses.map((a) => `  ${a.address}\t${a.tenant ? `tenant ${a.tenant}` : 'free'}${a.vm ? `\tvm ${a.vm}` : ''}\n`).join('');
}

export function mappingLine(m: Mapping): string {
  const target = [m.mac ? `nic ${m.mac}` : '', m.drAddress ? `dr ${m.drAddress}` : ''].filter(Boolean).join(' ');
  return `${m.address}\t→ vm ${m.vm} ${target}\tallow ${m.allow.length ? m.allow.join(',') : '(outbound only)'}${m.test ? '\talso test failovers' : ''}\n`;
}

export function registerPublicIp(program: Command): void {
  const cmd = program.command('public-ip').description('public addresses for failed-over VMs: the hoster\'s pools and grants, each tenant\'s 1:1 mappings with port allow-lists');
  const pool = cmd.command('pool').description('the hoster\'s pools of public addresses, routed to the failover hosts');

  withConfig(pool.command('create <name>').description('create a pool from addresses and prefixes (a prefix gives every host address in it)'))
    .option('--address <a>', 'an address or prefix, e.g. 203.0.113.16/29 (repeatable, or comma-separated)', many, [] as string[]).option('--json', 'print JSON')
    .action(async (name: string, o: Opts & { address: string[] }) => {
      if (o.address.length === 0) throw ErrInvalidArgument('give the pool\'s addresses with --address (an address or a prefix, repeatable)');
      const p = await (await apiClient(o.config)).call<Pool>('POST', '/v1/public-ip-pools', { name, addresses: o.address });
      if (o.json) return printJson(p);
      process.stdout.write(`created pool ${p.name} with ${p.total} address(es)\n`);
    });
  withConfig(pool.command('grant <name>').description('grant a tenant free addresses of the pool (--count) or the ones named (--address)'))
    .requiredOption('--tenant <name>', 'the tenant').option('--count <n>', 'how many free addresses').option('--address <a>', 'an address of the pool (repeatable)', many, [] as string[])
    .option('--json', 'print JSON')
    .action(async (name: string, o: Opts & { tenant: string; count?: string; address: string[] }) => {
      if ((o.count === undefined) === (o.address.length === 0)) throw ErrInvalidArgument('give --count N or --address A (repeatable), not both');
      if (o.count !== undefined && !/^\d{1,4}$/.test(o.count)) throw ErrInvalidArgument(`--count ${JSON.stringify(o.count.slice(0, 20))} is not a number`);
      const r = await (await apiClient(o.config)).call<{ granted: string[]; addresses: string[] }>('POST', `/v1/public-ip-pools/${seg(name)}/grants`,
        { tenant: o.tenant, ...(o.count !== undefined ? { count: Number(o.count) } : { addresses: o.address }) });
      if (o.json) return printJson(r);
      process.stdout.write(`granted ${r.granted.length ? r.granted.join(', ') : 'nothing new'} to tenant ${o.tenant}; it holds ${r.addresses.length} address(es) of pool ${name}\n`);
    });
  withConfig(pool.command('revoke <name>').description('take the pool\'s addresses (or one) back from a tenant; refused while one is mapped'))
    .requiredOption('--tenant <name>', 'the tenant').option('--address <a>', 'only this address').option('--json', 'print JSON')
    .action(async (name: string, o: Opts & { tenant: string; address?: string }) => {
      const q = o.address ? `?address=${seg(o.address)}` : '';
      const r = await callDelete<{ revoked: string[] }>(await apiClient(o.config), `/v1/public-ip-pools/${seg(name)}/grants/${seg(o.tenant)}${q}`);
      if (o.json) return printJson(r);
      process.stdout.write(`revoked ${r.revoked.join(', ')} from tenant ${o.tenant}\n`);
    });
  withConfig(pool.command('delete <name>').description('delete a pool none of whose addresses is granted'))
    .option('--json', 'print JSON')
    .action(async (name: string, o: Opts) => {
      const r = await callDelete<{ deleted: string }>(await apiClient(o.config), `/v1/public-ip-pools/${seg(name)}`);
      if (o.json) return printJson(r);
      process.stdout.write(`deleted pool ${name}\n`);
    });
  withConfig(pool.command('list').description('pools with every address, its tenant and the VM it is mapped to'))
    .option('--tenant <name>', 'only the addresses granted to this tenant').option('--json', 'print JSON')
    .action(async (o: Opts & { tenant?: string }) => {
      const q = o.tenant ? `?tenant=${seg(o.tenant)}` : '';
      const { pools } = await (await apiClient(o.config)).call<{ pools: Pool[] }>('GET', `/v1/public-ip-pools${q}`);
      if (o.json) return printJson(pools);
      for (const p of pools) process.stdout.write(poolLines(p));
    });

  const mappings = (tenant: string) => `/v1/tenants/${seg(tenant)}/public-ip-mappings`;
  withConfig(cmd.command('map <address>').description('map a public address granted to the tenant 1:1 to a VM: its NIC\'s planned address (--mac) or --dr-address'))
    .requiredOption('--tenant <name>', 'the tenant').requiredOption('--vm <name>', 'the VM')
    .option('--mac <mac>', 'the NIC whose planned address (of the public address\'s family) is the DR address').option('--dr-address <ip>', 'the DR address itself')
    .option('--allow <rule>', 'what reaches the VM: tcp/PORT, udp/PORT, tcp/FROM-TO, icmp (repeatable, or comma-separated; none: outbound only)', many, [] as string[])
    .option('--test', 'apply it to test failovers too (else real failovers only)').option('--replace', 'replace the address\'s mapping if it has one')
    .option('--json', 'print JSON')
    .action(async (address: string, o: Opts & { tenant: string; vm: string; mac?: string; drAddress?: string; allow: string[]; test?: boolean; replace?: boolean }) => {
      if (o.mac === undefined && o.drAddress === undefined) throw ErrInvalidArgument('give --mac (the NIC whose planned address is the DR address) or --dr-address');
      const body = { vm: o.vm, ...(o.mac ? { mac: o.mac } : {}), ...(o.drAddress ? { drAddress: o.drAddress } : {}), allow: o.allow, test: Boolean(o.test) };
      const api = await apiClient(o.config);
      const m = o.replace
        ? await api.call<Mapping>('PUT', `${mappings(o.tenant)}/${seg(address)}`, body)
        : await api.call<Mapping>('POST', mappings(o.tenant), { address, ...body });
      if (o.json) return printJson(m);
      process.stdout.write(`mapped ${mappingLine(m)}`);
    });
  withConfig(cmd.command('unmap <address>').description('remove a public address\'s mapping (a running VM loses it within a tick)'))
    .requiredOption('--tenant <name>', 'the tenant').option('--json', 'print JSON')
    .action(async (address: string, o: Opts & { tenant: string }) => {
      const r = await callDelete<{ deleted: string }>(await apiClient(o.config), `${mappings(o.tenant)}/${seg(address)}`);
      if (o.json) return printJson(r);
      process.stdout.write(`unmapped ${r.deleted}\n`);
    });
  withConfig(cmd.command('list').description('the public addresses granted to a tenant, each with its mapping'))
    .requiredOption('--tenant <name>', 'the tenant').option('--json', 'print JSON')
    .action(async (o: Opts & { tenant: string }) => {
      const api = await apiClient(o.config);
      const { addresses } = await api.call<{ addresses: { address: string; pool: string; vm: string | null }[] }>('GET', `/v1/tenants/${seg(o.tenant)}/public-ips`);
      const { mappings: maps } = await api.call<{ mappings: Mapping[] }>('GET', mappings(o.tenant));
      const rows = addresses.map((a) => ({ ...a, mapping: maps.find((m) => m.address === a.address) ?? null }));
      if (o.json) return printJson(rows);
      for (const r of rows) process.stdout.write(r.mapping ? mappingLine(r.mapping) : `${r.address}\tunmapped (pool ${r.pool})\n`);
    });
}
