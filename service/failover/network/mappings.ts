/**
 * Network mappings and the IP plan of a failover (the dry run `failover plan-ip`).
 *
 * A tenant's mapping turns a source subnet into a DR subnet of the same prefix length, keeping the host
 * part (192.168.10.0/24 → 10.50.10.0/24 makes 192.168.10.7 into 10.50.10.7), and carries the DR side's
 * gateway, DNS servers, search domains and network name, separately for production and test.
 *
 * `resolveNicPlan` gives each NIC the exact configuration it will get and where every value came from:
 * - explicit static settings are kept; blank gateways, DNS, search domains and network are filled from
 *   the mapping whose DR subnet holds the NIC's address;
 * - a NIC with no settings for the kind gets the addresses the agent last reported for it (or an
 *   operator recorded), mapped; a NIC none of whose addresses maps asks DHCP.
 * Failure: LifeboatError('invalid_argument') for bad mappings, LifeboatError('conflict') for a plan
 * that would give one address twice (a mapped address equal to an explicit one, two NICs mapped to
 * one address, or an address another VM holds in the same DR network), before anything boots.
 */
import { z } from 'zod';
import { ErrInvalidArgument, LifeboatError } from '../../../shared/errors.js';
import { type Cidr, type Ip, contains, familyOf, ipText, keepHostPart, makeCidr, parseInterfaceCidr, parseIp, parseSubnet } from './address.js';
import { dnsNameReason, networkNameReason } from './names.js';
import { type AddressInUse, type FailoverKind, type NicConfig, type NicSettings, type StaticConfig, MaxDnsServers, MaxSearchDomains, checkDnsServer, checkNicConfig, normaliseMac, zodRefusal } from './settings.js';

export const MaxMappingsPerTenant = 1024;

const text = z.string().max(300);

export const NetworkMappingSchema = z.object({
  kind: z.enum(['production', 'test']),
  /** The subnet on the tenant's site, e.g. 192.168.10.0/24. */
  source: text,
  /** The DR subnet of the same family and prefix length, e.g. 10.50.10.0/24. */
  target: text,
  /** The DR subnet's gateway (inside `target`). */
  gateway: text.optional(),
  dns: z.array(text).default([]),
  search: z.array(text).default([]),
  /** The DR network (granted to the tenant) NICs mapped here attach to. */
  network: text.optional(),
}).strict();

export type NetworkMapping = z.infer<typeof NetworkMappingSchema>;

/** Where a planned value came from. */
export type Origin = 'explicit' | 'dhcp' | `mapping ${string}→${string}`;

export interface PlannedValue {
  /** `mode`, `addresses[0]`, `gateway4`, `gateway6`, `dns[1]`, `search[0]`, `mtu`, `network`. */
  field: string;
  value: string;
  from: Origin;
}

export interface NicPlan {
  mac: string;
  /** A stable interface name for the guest (`set-name`, config drive link id): dr0, dr1, … by NIC order. */
  name: string;
  config: NicConfig;
  values: PlannedValue[];
  /** Things the operator should know (a reported address no mapping covers). */
  notes: string[];
}

interface ParsedMapping {
  m: NetworkMapping;
  source: Cidr;
  target: Cidr;
  origin: Origin;
}

/** Checks a tenant's mappings as a whole and returns them normalised. */
export function parseMappings(input: unknown, path = 'mappings'): NetworkMapping[] {
  if (!Array.isArray(input)) throw ErrInvalidArgument(`${path}: expected a list of mappings`);
  if (input.length > MaxMappingsPerTenant) throw ErrInvalidArgument(`${path}: at most ${MaxMappingsPerTenant} mappings per tenant (got ${input.length})`);
  const out = input.map((raw, i) => parseMapping(raw, `${path}[${i}]`));
  const parsed = out.map(toParsed);
  parsed.forEach((a, i) => {
    for (let j = 0; j < i; j++) {
      const b = parsed[j]!;
      if (a.m.kind !== b.m.kind) continue;
      if (a.source.text === b.source.text) throw ErrInvalidArgument(`${path}[${i}].source: ${a.source.text} is already mapped by ${path}[${j}] (${a.m.kind})`);
      if (overlaps(a.target, b.target)) throw ErrInvalidArgument(`${path}[${i}].target: ${a.target.text} overlaps ${b.target.text} of ${path}[${j}] (${a.m.kind}): two sites' hosts could map to one address`);
    }
  });
  return out;
}

export function parseMapping(input: unknown, path: string): NetworkMapping {
  const r = NetworkMappingSchema.safeParse(input);
  if (!r.success) throw zodRefusal(r.error, path);
  const m = r.data;
  const source = subnet(m.source, `${path}.source`);
  const target = subnet(m.target, `${path}.target`);
  if (source.family !== target.family) throw ErrInvalidArgument(`${path}.target: ${target.text} is IPv${target.family} but the source ${source.text} is IPv${source.family}`);
  if (source.prefix !== target.prefix) throw ErrInvalidArgument(`${path}.target: prefix /${target.prefix} differs from the source's /${source.prefix} (the host part is kept, so they must be equal)`);
  const out: NetworkMapping = { kind: m.kind, source: source.text, target: target.text, dns: [], search: [] };
  if (m.gateway !== undefined) {
    const g = parseIp(m.gateway);
    if (!g.ok) throw ErrInvalidArgument(`${path}.gateway: ${g.reason}`);
    if (familyOf(g.value) !== target.family || (!contains(target, g.value) && !(target.family === 6 && g.value.range() === 'linkLocal'))) {
      throw ErrInvalidArgument(`${path}.gateway: ${ipText(g.value)} is off-link: it is not inside ${target.text}`);
    }
    // A gateway that is the DR subnet's network or broadcast address is refused like an interface's.
    if (g.value.range() !== 'linkLocal') {
      const asIf = parseInterfaceCidr(`${ipText(g.value)}/${target.prefix}`);
      if (!asIf.ok) throw ErrInvalidArgument(`${path}.gateway: ${asIf.reason}`);
    }
    out.gateway = ipText(g.value);
  }
  if (m.dns.length > MaxDnsServers) throw ErrInvalidArgument(`${path}.dns: at most ${MaxDnsServers} DNS servers (got ${m.dns.length})`);
  if (m.search.length > MaxSearchDomains) throw ErrInvalidArgument(`${path}.search: at most ${MaxSearchDomains} search domains (got ${m.search.length})`);
  out.dns = m.dns.map((d, i) => checkDnsServer(d, `${path}.dns[${i}]`));
  out.search = m.search.map((s, i) => {
    const bad = dnsNameReason(s, 'search domain');
    if (bad) throw ErrInvalidArgument(`${path}.search[${i}]: ${bad}`);
    return s.toLowerCase();
  });
  if (m.network !== undefined) {
    const bad = networkNameReason(m.network);
    if (bad) throw ErrInvalidArgument(`${path}.network: ${bad}`);
    out.network = m.network;
  }
  return out;
}

/** The address `ip` (text) becomes under the first (longest-prefix) mapping of `kind` covering it. */
export function mapAddress(ip: string, mappings: readonly NetworkMapping[], kind: FailoverKind): { address: string; origin: Origin } | undefined {
  const p = parseIp(ip);
  if (!p.ok) return undefined;
  const m = sourceMappingFor(p.value, mappings.filter((x) => x.kind === kind).map(toParsed));
  if (!m) return undefined;
  return { address: makeCidr(keepHostPart(p.value, m.target), m.target.prefix).text, origin: m.origin };
}

/**
 * The IP plan of one VM for one kind of failover.
 * @param vmNics the VM's NICs as stored (parseNicSettings/validateVmNics output).
 * @param reportedAddresses per MAC (any form), the addresses last reported or recorded for the NIC on
 *   the tenant's site, with or without prefix; used for NICs without settings of this kind.
 * @param options.otherAddressesInNetwork addresses the tenant's other VMs hold, by DR network.
 */
export function resolveNicPlan(
  vmNics: readonly NicSettings[],
  mappings: readonly NetworkMapping[],
  kind: FailoverKind,
  reportedAddresses: Readonly<Record<string, readonly string[]>> = {},
  options: { otherAddressesInNetwork?: readonly AddressInUse[] } = {},
): NicPlan[] {
  const ours = mappings.filter((m) => m.kind === kind).map(toParsed);
  const reported = new Map<string, readonly string[]>();
  for (const [mac, list] of Object.entries(reportedAddresses)) {
    const n = normaliseMac(mac);
    if (n.ok) reported.set(n.mac, list);
  }

  const plans = vmNics.map((nic, i) => {
    const name = `dr${i}`;
    const explicit = nic[kind];
    if (explicit?.mode === 'dhcp') return dhcpPlan(nic.mac, name, explicit, 'explicit', []);
    if (explicit?.mode === 'static') return fillFromMappings(nic.mac, name, explicit, ours, kind);
    return mappedPlan(nic.mac, name, reported.get(nic.mac) ?? [], ours, kind);
  });

  // The resolved configurations must pass the same checks as stored settings (on-link gateway, …).
  for (const p of plans) p.config = checkNicConfig(p.config, `${kind} plan, nic ${p.mac}`);
  refuseConflicts(plans, kind, options.otherAddressesInNetwork ?? []);
  return plans;
}

function dhcpPlan(mac: string, name: string, cfg: NicConfig & { mode: 'dhcp' }, from: Origin, notes: string[]): NicPlan {
  const values: PlannedValue[] = [{ field: 'mode', value: 'dhcp', from: from === 'explicit' ? 'explicit' : 'dhcp' }];
  if (cfg.network !== undefined) values.push({ field: 'network', value: cfg.network, from });
  if (cfg.mtu !== undefined) values.push({ field: 'mtu', value: String(cfg.mtu), from });
  return { mac, name, config: { ...cfg }, values, notes };
}

/** Explicit static settings, blanks filled from the mappings whose DR subnet holds the NIC's addresses. */
function fillFromMappings(mac: string, name: string, cfg: StaticConfig, ours: readonly ParsedMapping[], kind: FailoverKind): NicPlan {
  const cidrs = cfg.addresses.map((a) => parseInterfaceCidr(a)).flatMap((r) => (r.ok ? [r.value] : []));
  const covering = cidrs.map((c) => targetMappingFor(c.ip, ours)).filter((m): m is ParsedMapping => m !== undefined);
  const values: PlannedValue[] = [{ field: 'mode', value: 'static', from: 'explicit' }];
  cfg.addresses.forEach((a, i) => values.push({ field: `addresses[${i}]`, value: a, from: 'explicit' }));
  const out: StaticConfig = { ...cfg, addresses: [...cfg.addresses], dns: [...cfg.dns], search: [...cfg.search] };
  fillCommon(out, values, covering, cfg, `${kind} plan, nic ${mac}`);
  return { mac, name, config: out, values, notes: [] };
}

/** A NIC without settings: its reported addresses mapped, or DHCP when none maps. */
function mappedPlan(mac: string, name: string, reported: readonly string[], ours: readonly ParsedMapping[], kind: FailoverKind): NicPlan {
  const notes: string[] = [];
  const addresses: string[] = [];
  const used: ParsedMapping[] = [];
  const values: PlannedValue[] = [];
  for (const r of reported) {
    const ip = parseIp(String(r).split('/')[0] ?? '');
    if (!ip.ok || ip.value.range() === 'linkLocal' || ip.value.range() === 'loopback') continue;
    const m = sourceMappingFor(ip.value, ours);
    if (!m) { notes.push(`reported address ${ipText(ip.value)} is covered by no ${kind} mapping`); continue; }
    const mapped = makeCidr(keepHostPart(ip.value, m.target), m.target.prefix).text;
    if (addresses.includes(mapped)) continue;
    values.push({ field: `addresses[${addresses.length}]`, value: mapped, from: m.origin });
    addresses.push(mapped);
    if (!used.includes(m)) used.push(m);
  }
  if (addresses.length === 0) {
    const plan = dhcpPlan(mac, name, { mode: 'dhcp' }, 'dhcp', notes);
    if (reported.length === 0) notes.push('no address reported or recorded for this NIC');
    return plan;
  }
  const out: StaticConfig = { mode: 'static', addresses, dns: [], search: [] };
  values.unshift({ field: 'mode', value: 'static', from: used[0]!.origin });
  fillCommon(out, values, used, { mode: 'static', addresses, dns: [], search: [] }, `${kind} plan, nic ${mac}`);
  return { mac, name, config: out, values, notes };
}

/** Gateways, DNS, search domains and network: explicit when set, else from the covering mappings. */
function fillCommon(out: StaticConfig, values: PlannedValue[], covering: readonly ParsedMapping[], explicit: StaticConfig, who: string): void {
  for (const family of [4, 6] as const) {
    const field = family === 4 ? 'gateway4' : 'gateway6';
    const given = explicit[field];
    if (given !== undefined) { values.push({ field, value: given, from: 'explicit' }); continue; }
    const m = covering.find((c) => c.target.family === family && c.m.gateway !== undefined);
    if (m) { out[field] = m.m.gateway!; values.push({ field, value: m.m.gateway!, from: m.origin }); }
  }
  if (explicit.dns.length > 0) {
    explicit.dns.forEach((d, i) => values.push({ field: `dns[${i}]`, value: d, from: 'explicit' }));
  } else {
    for (const m of covering) for (const d of m.m.dns) if (!out.dns.includes(d) && out.dns.length < MaxDnsServers) { values.push({ field: `dns[${out.dns.length}]`, value: d, from: m.origin }); out.dns.push(d); }
  }
  if (explicit.search.length > 0) {
    explicit.search.forEach((s, i) => values.push({ field: `search[${i}]`, value: s, from: 'explicit' }));
  } else {
    for (const m of covering) for (const s of m.m.search) if (!out.search.includes(s) && out.search.length < MaxSearchDomains) { values.push({ field: `search[${out.search.length}]`, value: s, from: m.origin }); out.search.push(s); }
  }
  if (explicit.network !== undefined) {
    values.push({ field: 'network', value: explicit.network, from: 'explicit' });
  } else {
    const named = covering.filter((m) => m.m.network !== undefined);
    const first = named[0];
    const other = named.find((m) => m.m.network !== first?.m.network);
    if (first && other) throw new LifeboatError('conflict', `${who}: its addresses map into two DR networks: ${first.m.network} (${first.origin}) and ${other.m.network} (${other.origin})`);
    if (first) { out.network = first.m.network!; values.push({ field: 'network', value: first.m.network!, from: first.origin }); }
  }
  if (explicit.mtu !== undefined) values.push({ field: 'mtu', value: String(explicit.mtu), from: 'explicit' });
}

/** One address twice in the plan, or already held by another VM in the same DR network: refused. */
function refuseConflicts(plans: readonly NicPlan[], kind: FailoverKind, others: readonly AddressInUse[]): void {
  const seen = new Map<string, { plan: NicPlan; from: Origin }>();
  for (const plan of plans) {
    if (plan.config.mode !== 'static') continue;
    for (const v of plan.values) {
      if (!v.field.startsWith('addresses[')) continue;
      const ip = v.value.slice(0, v.value.lastIndexOf('/'));
      const first = seen.get(ip);
      if (first) {
        const how = (o: Origin) => (o === 'explicit' ? 'set explicitly' : `mapped by ${o.slice('mapping '.length)}`);
        const self = first.plan === plan ? 'the same NIC' : `nic ${first.plan.mac}`;
        throw new LifeboatError('conflict', `${kind} plan, nic ${plan.mac}: address ${ip} (${how(v.from)}) is already ${how(first.from)} on ${self}`);
      }
      seen.set(ip, { plan, from: v.from });
    }
  }
  for (const o of others) {
    const ip = parseIp(o.address.split('/')[0] ?? '');
    if (!ip.ok) continue;
    const hit = seen.get(ipText(ip.value));
    if (hit && hit.plan.config.network === o.network) {
      throw new LifeboatError('conflict', `${kind} plan, nic ${hit.plan.mac}: address ${ipText(ip.value)} in network ${o.network} is already used by ${o.owner}`);
    }
  }
}

function subnet(textIn: string, path: string): Cidr {
  const r = parseSubnet(textIn);
  if (!r.ok) throw ErrInvalidArgument(`${path}: ${r.reason}`);
  return r.value;
}

function toParsed(m: NetworkMapping): ParsedMapping {
  const source = parseSubnet(m.source);
  const target = parseSubnet(m.target);
  if (!source.ok || !target.ok) throw ErrInvalidArgument(`mapping ${m.source}→${m.target}: not a valid mapping (parse it with parseMappings first)`);
  return { m, source: source.value, target: target.value, origin: `mapping ${source.value.text}→${target.value.text}` };
}

function sourceMappingFor(ip: Ip, ours: readonly ParsedMapping[]): ParsedMapping | undefined {
  return longest(ours.filter((m) => contains(m.source, ip)), (m) => m.source.prefix);
}

function targetMappingFor(ip: Ip, ours: readonly ParsedMapping[]): ParsedMapping | undefined {
  return longest(ours.filter((m) => contains(m.target, ip)), (m) => m.target.prefix);
}

function longest<T>(list: readonly T[], prefix: (t: T) => number): T | undefined {
  let best: T | undefined;
  for (const t of list) if (best === undefined || prefix(t) > prefix(best)) best = t;
  return best;
}

function overlaps(a: Cidr, b: Cidr): boolean {
  return a.family === b.family && (contains(a, b.ip) || contains(b, a.ip));
}
