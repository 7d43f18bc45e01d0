/**
 * A VM's NICs and their failover settings, through the running service's API:
 *   vm nic set VM --tenant T --mac M [--production|--test|--home] (--dhcp | --ip A/P … [--gateway G] [--gateway6 G]
 *       [--dns IP …] [--search D …] | --clear) [--mtu N] [--network NAME] [--model virtio|e1000|rtl8139] [--reported-ip A …]
 *   vm nic list VM --tenant T [--json]
 *   vm nic remove VM --tenant T --mac M
 *   failover plan-ip VM --tenant T [--test|--production|--home] [--json]   the dry run: what each NIC will get, and from where
 * `set` changes one kind of one NIC (the other kinds stay); the service validates the whole VM
 * before it stores anything, and a refusal is one line. `--home` is the NIC's normal configuration
 * on the tenant's own site, which failback reinstates.
 */
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { ErrInvalidArgument } from '../../shared/errors.js';
import type { NicPlan } from '../failover/network/mappings.js';
import type { SettingsKind } from '../failover/network/settings.js';
import { SettingsKinds, normaliseMac } from '../failover/network/settings.js';
import type { ApiClient } from './common.js';
import { apiClient, withConfig } from './common.js';

type Opts = { config?: string; json?: boolean; tenant: string };
const seg = encodeURIComponent;
const many = (v: string, acc: string[]) => [...acc, v];

interface Nic {
  mac: string;
  position: number;
  model: string;
  production?: Record<string, unknown>;
  test?: Record<string, unknown>;
  home?: Record<string, unknown>;
  reportedAddresses: string[];
}

/** common.ts's client is typed for GET, POST and PUT; DELETE travels the same way. */
export function callDelete<T>(api: ApiClient, path: string): Promise<T> {
  return (api.call.bind(api) as (method: string, path: string) => Promise<T>)('DELETE', path);
}

/** `--production`, `--test` or `--home` (production when none). */
export function kindOf(opts: { production?: boolean; test?: boolean; home?: boolean }): SettingsKind {
  const given = SettingsKinds.filter((k) => opts[k]);
  if (given.length > 1) throw ErrInvalidArgument(`give one of --production, --test or --home (got ${given.map((k) => `--${k}`).join(' and ')})`);
  return given[0] ?? 'production';
}

function describeConfig(c: Record<string, unknown> | undefined): string {
  if (!c) return 'blank (mappings, else DHCP)';
  const parts = [String(c.mode === 'dhcp' ? (c.dhcp6 ? 'dhcp+dhcp6' : 'dhcp') : (c.addresses as string[]).join(' '))];
  for (const k of ['gateway4', 'gateway6'] as const) if (c[k]) parts.push(`gw ${String(c[k])}`);
  if (Array.isArray(c.dns) && c.dns.length) parts.push(`dns ${c.dns.join(' ')}`);
  if (Array.isArray(c.search) && c.search.length) parts.push(`search ${c.search.join(' ')}`);
  if (c.mtu !== undefined) parts.push(`mtu ${String(c.mtu)}`);
  if (c.network) parts.push(`network ${String(c.network)}`);
  return parts.join('  ');
}

function printNic(n: Nic): void {
  process.stdout.write(`${n.mac}\t${n.model}\n  production  ${describeConfig(n.production)}\n  test        ${describeConfig(n.test)}\n`);
  if (n.home) process.stdout.write(`  home        ${describeConfig(n.home)}\n`);
  if (n.reportedAddresses.length) process.stdout.write(`  reported    ${n.reportedAddresses.join(' ')}\n`);
}

type SetOpts = Opts & {
  mac: string; production?: boolean; test?: boolean; home?: boolean; dhcp?: boolean; dhcp6?: boolean; clear?: boolean; ip: string[]; gateway?: string; gateway6?: string;
  dns: string[]; search: string[]; mtu?: string; network?: string; model?: string; reportedIp: string[];
};

/** The kind's new configuration from the options, or undefined when the options leave it as it is. */
function configFrom(o: SetOpts): Record<string, unknown> | null | undefined {
  const staticOnly = o.gateway !== undefined || o.gateway6 !== undefined || o.dns.length > 0 || o.search.length > 0;
  const chosen = [o.dhcp || o.dhcp6 ? '--dhcp' : '', o.ip.length ? '--ip' : '', o.clear ? '--clear' : ''].filter(Boolean);
  if (chosen.length > 1) throw ErrInvalidArgument(`give one of --dhcp, --ip or --clear (got ${chosen.join(' and ')})`);
  if (staticOnly && !o.ip.length) throw ErrInvalidArgument('--gateway, --gateway6, --dns and --search need --ip (a static configuration)');
  const mtu = o.mtu === undefined ? undefined : /^\d{1,6}$/.test(o.mtu) ? Number(o.mtu) : NaN;
  if (Number.isNaN(mtu)) throw ErrInvalidArgument(`--mtu ${JSON.stringify(o.mtu)} is not a whole number`);
  const common = { ...(o.network === undefined ? {} : { network: o.network }), ...(mtu === undefined ? {} : { mtu }) };
  if (o.clear) {
    if (o.network !== undefined || mtu !== undefined) throw ErrInvalidArgument('--clear leaves the kind blank: it takes no --network or --mtu');
    return null;
  }
  if (o.dhcp || o.dhcp6) return { mode: 'dhcp', ...(o.dhcp6 ? { dhcp6: true } : {}), ...common };
  if (o.ip.length) {
    return { mode: 'static', addresses: o.ip, ...(o.gateway ? { gateway4: o.gateway } : {}), ...(o.gateway6 ? { gateway6: o.gateway6 } : {}), dns: o.dns, search: o.search, ...common };
  }
  if (o.network !== undefined || mtu !== undefined) throw ErrInvalidArgument('--network and --mtu go with --dhcp or --ip');
  return undefined;
}

export function registerNic(vm: Command): void {
  const nic = vm.command('nic').description('a VM\'s NICs and their settings: production and test failovers, and home (failback)');

  withConfig(nic.command('set <vm>').description('set one NIC\'s production, test or home settings (validated before anything is stored)'))
    .requiredOption('--tenant <name>', 'the VM\'s tenant').requiredOption('--mac <mac>', 'the NIC\'s MAC address')
    .option('--production', 'set the production settings (the default)').option('--test', 'set the test-failover settings')
    .option('--home', 'set the NIC\'s normal configuration on the tenant\'s own site, reinstated at failback')
    .option('--dhcp', 'the NIC asks DHCP').option('--dhcp6', 'the NIC asks DHCP and DHCPv6').option('--clear', 'leave the kind blank: mappings fill it in at failover, else DHCP')
    .option('--ip <address/prefix>', 'a static address with its prefix (repeatable; IPv4 and IPv6)', many, [] as string[])
    .option('--gateway <ip>', 'the IPv4 gateway (on-link)').option('--gateway6 <ip>', 'the IPv6 gateway (on-link or fe80::…)')
    .option('--dns <ip>', 'a DNS server (repeatable)', many, [] as string[]).option('--search <domain>', 'a DNS search domain (repeatable)', many, [] as string[])
    .option('--mtu <n>', 'the MTU').option('--network <name>', 'the DR network (granted to the tenant) the NIC attaches to')
    .option('--model <model>', 'the NIC model: virtio, e1000 or rtl8139')
    .option('--reported-ip <address>', 'an address the NIC has on the tenant\'s site, for mappings (repeatable; replaces those recorded)', many, [] as string[])
    .option('--json', 'print JSON')
    .action(async (vmName: string, o: SetOpts) => {
      const kind = kindOf(o);
      const config = configFrom(o);
      const mac = normaliseMac(o.mac);
      if (!mac.ok) throw ErrInvalidArgument(`--mac: ${mac.reason}`);
      if (config === undefined && o.model === undefined && o.reportedIp.length === 0) throw ErrInvalidArgument('nothing to set: give --dhcp, --ip, --clear, --model or --reported-ip');
      const api = await apiClient(o.config);
      const base = `/v1/tenants/${seg(o.tenant)}/vms/${seg(vmName)}/nics`;
      const current = (await api.call<{ nics: Nic[] }>('GET', base)).nics.find((n) => n.mac === mac.mac);
      const body: Record<string, unknown> = {
        ...(o.model ?? current?.model ? { model: o.model ?? current?.model } : {}),
        ...(current?.production ? { production: current.production } : {}),
        ...(current?.test ? { test: current.test } : {}),
        ...(current?.home ? { home: current.home } : {}),
        reportedAddresses: o.reportedIp.length ? o.reportedIp : current?.reportedAddresses ?? [],
      };
      if (config === null) delete body[kind]; else if (config !== undefined) body[kind] = config;
      const saved = await api.call<Nic>('PUT', `${base}/${seg(mac.mac)}`, body);
      if (o.json) return printJson(saved);
      printNic(saved);
    });

  withConfig(nic.command('list <vm>').description('a VM\'s NICs with their production, test and home settings'))
    .requiredOption('--tenant <name>', 'the VM\'s tenant').option('--json', 'print JSON')
    .action(async (vmName: string, o: Opts) => {
      const { nics } = await (await apiClient(o.config)).call<{ nics: Nic[] }>('GET', `/v1/tenants/${seg(o.tenant)}/vms/${seg(vmName)}/nics`);
      if (o.json) return printJson(nics);
      if (nics.length === 0) process.stdout.write(`VM ${vmName} has no NICs recorded\n`);
      for (const n of nics) printNic(n);
    });

  withConfig(nic.command('remove <vm>').description('forget a NIC and its settings'))
    .requiredOption('--tenant <name>', 'the VM\'s tenant').requiredOption('--mac <mac>', 'the NIC\'s MAC address')
    .action(async (vmName: string, o: Opts & { mac: string }) => {
      const mac = normaliseMac(o.mac);
      if (!mac.ok) throw ErrInvalidArgument(`--mac: ${mac.reason}`);
      await callDelete(await apiClient(o.config), `/v1/tenants/${seg(o.tenant)}/vms/${seg(vmName)}/nics/${seg(mac.mac)}`);
      process.stdout.write(`removed NIC ${mac.mac} of ${vmName}\n`);
    });
}

/** `failover plan-ip`, added to the `failover` command registerFailover made. */
export function registerPlanIp(program: Command): void {
  const failover = program.commands.find((c) => c.name() === 'failover');
  if (!failover) throw new Error('registerPlanIp runs after registerFailover');
  withConfig(failover.command('plan-ip <vm>').description('dry run: the exact settings each NIC would get in a failover, and where each value comes from (explicit, mapping, DHCP)'))
    .requiredOption('--tenant <name>', 'the VM\'s tenant')
    .option('--production', 'a production (planned or unplanned) failover: the default').option('--test', 'a test failover')
    .option('--home', 'failback: the home settings each NIC gets on the tenant\'s site').option('--json', 'print JSON')
    .action(async (vmName: string, o: Opts & { production?: boolean; test?: boolean; home?: boolean }) => {
      const kind = kindOf(o);
      const plan = await (await apiClient(o.config)).call<{ nics: NicPlan[] }>('GET', `/v1/tenants/${seg(o.tenant)}/vms/${seg(vmName)}/ip-plan?kind=${kind}`);
      if (o.json) return printJson(plan);
      if (plan.nics.length === 0) process.stdout.write(`VM ${vmName} has no NICs recorded\n`);
      for (const p of plan.nics) {
        process.stdout.write(`nic ${p.mac} (${p.name}): ${p.config.mode}\n`);
        for (const v of p.values) process.stdout.write(`  ${v.field.padEnd(14)}${v.value.padEnd(28)}${v.from}\n`);
        for (const n of p.notes) process.stdout.write(`  note: ${n}\n`);
      }
    });
}
