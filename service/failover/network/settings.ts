/**
 * A NIC's failover settings: its MAC and, for production and for test failovers, DHCP or a static
 * configuration (several IPv4 and IPv6 addresses with prefixes, gateways, DNS servers, search domains,
 * MTU) plus the DR network it attaches to.
 *
 * Input: JSON from the API, the CLI or a CSV import (`parseNicSettings`, `validateVmNics`).
 * Output: the same settings normalised (MAC lower-case with colons, addresses in canonical text,
 * search domains lower-case), ready to store.
 * Failure: the first problem as LifeboatError('invalid_argument') with one line naming the field path,
 * e.g. `nics[0].test.addresses[1]: 10.0.0.255/24 is the broadcast address of 10.0.0.0/24`.
 *
 * A kind left out (no `production` or no `test`) is blank: network mappings fill it in at failover,
 * else the NIC asks DHCP (mappings.ts). `home` is the NIC's normal configuration on the tenant's own
 * site (no DR network), reinstated at failback; left out, the NIC asks DHCP at home.
 */
import { z } from 'zod';
import { ErrInvalidArgument } from '../../../shared/errors.js';
import { type Cidr, type Family, clip, contains, familyOf, ipText, parseInterfaceCidr, parseIp, unusableReason } from './address.js';
import { dnsNameReason, networkNameReason } from './names.js';

export const MaxAddressesPerNic = 32;
export const MaxDnsServers = 8;
/** glibc before 2.26 reads at most six search domains; more would be dropped without a word. */
export const MaxSearchDomains = 6;
export const MaxNicsPerVm = 32;
export const MinMtu = 576;
/** IPv6 needs a link MTU of at least 1280 (RFC 8200). */
export const MinMtuIpv6 = 1280;
export const MaxMtu = 9216;

export type FailoverKind = 'production' | 'test';
/**
 * The kinds of settings a NIC holds: one per kind of failover, and `home`, the NIC's normal
 * configuration on the tenant's own site, which failback reinstates (service/failback/home.ts).
 */
export const SettingsKinds = ['production', 'test', 'home'] as const;
export type SettingsKind = typeof SettingsKinds[number];

const text = z.string().max(300);
const shared = { network: text.optional(), mtu: z.number().optional() };

export const DhcpConfigSchema = z.object({
  mode: z.literal('dhcp'),
  /** Ask DHCPv6 as well (router advertisements are accepted either way). */
  dhcp6: z.boolean().optional(),
  ...shared,
}).strict();

export const StaticConfigSchema = z.object({
  mode: z.literal('static'),
  addresses: z.array(text),
  gateway4: text.optional(),
  gateway6: text.optional(),
  dns: z.array(text).default([]),
  search: z.array(text).default([]),
  ...shared,
}).strict();

export const NicConfigSchema = z.discriminatedUnion('mode', [DhcpConfigSchema, StaticConfigSchema]);

export const NicSettingsSchema = z.object({
  mac: text,
  production: NicConfigSchema.optional(),
  test: NicConfigSchema.optional(),
  /** The NIC's own configuration on the tenant's site (no DR network), reinstated at failback. */
  home: NicConfigSchema.optional(),
}).strict();

export type DhcpConfig = z.infer<typeof DhcpConfigSchema>;
export type StaticConfig = z.infer<typeof StaticConfigSchema>;
export type NicConfig = DhcpConfig | StaticConfig;
export type NicSettings = z.infer<typeof NicSettingsSchema>;

/** An address already given to another VM of the tenant in a DR network (from the catalog). */
export interface AddressInUse {
  network: string;
  /** The address, with or without its prefix. */
  address: string;
  /** Who holds it, for the message: e.g. `vm web2 nic 52:54:00:00:00:02 (production)`. */
  owner: string;
}

/** Parses and checks one NIC's settings; `path` prefixes every message (e.g. `nics[2]`). */
export function parseNicSettings(input: unknown, path = 'nic'): NicSettings {
  const parsed = NicSettingsSchema.safeParse(input);
  if (!parsed.success) throw zodRefusal(parsed.error, path);
  const s = parsed.data;
  const out: NicSettings = { mac: checkMac(s.mac, `${path}.mac`) };
  if (s.production) out.production = checkNicConfig(s.production, `${path}.production`);
  if (s.test) out.test = checkNicConfig(s.test, `${path}.test`);
  if (s.home) out.home = checkHomeConfig(s.home, `${path}.home`);
  return out;
}

/** Parses one kind's configuration alone (the CLI's `vm nic set --test …`); `home` names no DR network. */
export function parseNicConfig(input: unknown, path: string, kind: SettingsKind = 'production'): NicConfig {
  const parsed = NicConfigSchema.safeParse(input);
  if (!parsed.success) throw zodRefusal(parsed.error, path);
  return kind === 'home' ? checkHomeConfig(parsed.data, path) : checkNicConfig(parsed.data, path);
}

/** Home settings: the same checks, and no `network` (they are the tenant's own site, not a DR network). */
export function checkHomeConfig(cfg: NicConfig, path: string): NicConfig {
  if (cfg.network !== undefined) throw ErrInvalidArgument(`${path}.network: home settings are the NIC's own site and name no DR network`);
  return checkNicConfig(cfg, path);
}

/**
 * A VM's NICs as a whole: each NIC valid, MACs unique within the VM, and no address twice in one DR
 * network, neither within the VM nor against the tenant's other VMs (`otherAddressesInNetwork`, the
 * addresses the catalog holds for the networks these NICs name, this VM's own rows left out).
 * NICs that name no network are checked against each other only (per kind).
 */
export function validateVmNics(nics: unknown, options: { otherAddressesInNetwork?: readonly AddressInUse[] } = {}): NicSettings[] {
  if (!Array.isArray(nics)) throw ErrInvalidArgument('nics: expected a list of NICs');
  if (nics.length > MaxNicsPerVm) throw ErrInvalidArgument(`nics: at most ${MaxNicsPerVm} NICs per VM (got ${nics.length})`);
  const out = nics.map((n, i) => parseNicSettings(n, `nics[${i}]`));

  const macs = new Map<string, number>();
  out.forEach((n, i) => {
    const first = macs.get(n.mac);
    if (first !== undefined) throw ErrInvalidArgument(`nics[${i}].mac: ${n.mac} is already the MAC of nics[${first}]`);
    macs.set(n.mac, i);
  });

  // One VM's NIC may use one address in production, in test and at home: they never run at once.
  const taken = new Map<string, { owner: string; nic: number }>();
  for (const other of options.otherAddressesInNetwork ?? []) {
    const ip = parseIp(other.address.split('/')[0] ?? '');
    if (ip.ok) taken.set(`${other.network}\u0000${ipText(ip.value)}`, { owner: other.owner, nic: -1 });
  }
  out.forEach((n, i) => {
    for (const kind of SettingsKinds) {
      const cfg = n[kind];
      if (!cfg || cfg.mode !== 'static') continue;
      const net = cfg.network ?? `\u0001unnamed ${kind}`;
      cfg.addresses.forEach((a, j) => {
        const ip = a.slice(0, a.lastIndexOf('/'));
        const key = `${net}\u0000${ip}`;
        const holder = taken.get(key);
        const where = cfg.network ? ` in network ${cfg.network}` : '';
        if (holder !== undefined && holder.nic !== i) throw ErrInvalidArgument(`nics[${i}].${kind}.addresses[${j}]: ${ip}${where} is already used by ${holder.owner}`);
        taken.set(key, { owner: `nics[${i}].${kind}.addresses[${j}]`, nic: i });
      });
    }
  });
  return out;
}

/** A MAC in colon, hyphen or bare hex form, normalised to aa:bb:cc:dd:ee:ff; unicast, not all zero. */
export function normaliseMac(input: string): { ok: true; mac: string } | { ok: false; reason: string } {
  const raw = String(input);
  let hex: string;
  if (raw.length === 17 && (sameSeparators(raw, ':') || sameSeparators(raw, '-'))) {
    hex = [0, 3, 6, 9, 12, 15].map((i) => raw.slice(i, i + 2)).join('');
  } else if (raw.length === 12) {
    hex = raw;
  } else {
    return { ok: false, reason: `${JSON.stringify(clip(raw))} is not a MAC address (expected six hex pairs, e.g. 52:54:00:12:34:56)` };
  }
  for (const ch of hex) {
    if (!'0123456789abcdefABCDEF'.includes(ch)) return { ok: false, reason: `${JSON.stringify(clip(raw))} is not a MAC address (expected six hex pairs, e.g. 52:54:00:12:34:56)` };
  }
  hex = hex.toLowerCase();
  const mac = hex.match(/../g)!.join(':');
  if (/^0+$/.test(hex)) return { ok: false, reason: `${mac} is the all-zero MAC address` };
  if (parseInt(hex.slice(0, 2), 16) & 1) return { ok: false, reason: `${mac} is a multicast MAC address (the first octet is odd)` };
  return { ok: true, mac };
}

export function checkMac(input: string, path: string): string {
  const r = normaliseMac(input);
  if (!r.ok) throw ErrInvalidArgument(`${path}: ${r.reason}`);
  return r.mac;
}

/** Checks one kind's configuration and returns it normalised. */
export function checkNicConfig(cfg: NicConfig, path: string): NicConfig {
  if (cfg.network !== undefined) refuseIf(networkNameReason(cfg.network), `${path}.network`);
  if (cfg.mode === 'dhcp') {
    if (cfg.mtu !== undefined) checkMtu(cfg.mtu, cfg.dhcp6 === true, `${path}.mtu`);
    return { ...cfg };
  }

  if (cfg.addresses.length === 0) throw ErrInvalidArgument(`${path}.addresses: a static NIC needs at least one address`);
  if (cfg.addresses.length > MaxAddressesPerNic) throw ErrInvalidArgument(`${path}.addresses: at most ${MaxAddressesPerNic} addresses per NIC (got ${cfg.addresses.length})`);
  if (cfg.dns.length > MaxDnsServers) throw ErrInvalidArgument(`${path}.dns: at most ${MaxDnsServers} DNS servers (got ${cfg.dns.length})`);
  if (cfg.search.length > MaxSearchDomains) throw ErrInvalidArgument(`${path}.search: at most ${MaxSearchDomains} search domains (got ${cfg.search.length})`);

  const cidrs: Cidr[] = [];
  const seen = new Map<string, number>();
  cfg.addresses.forEach((a, i) => {
    const r = parseInterfaceCidr(a);
    if (!r.ok) throw ErrInvalidArgument(`${path}.addresses[${i}]: ${r.reason}`);
    const first = seen.get(r.value.address);
    if (first !== undefined) throw ErrInvalidArgument(`${path}.addresses[${i}]: ${r.value.address} is already addresses[${first}]`);
    seen.set(r.value.address, i);
    cidrs.push(r.value);
  });

  const out: StaticConfig = { mode: 'static', addresses: cidrs.map((c) => c.text), dns: [], search: [] };
  if (cfg.gateway4 !== undefined) out.gateway4 = checkGateway(cfg.gateway4, 4, cidrs, `${path}.gateway4`);
  if (cfg.gateway6 !== undefined) out.gateway6 = checkGateway(cfg.gateway6, 6, cidrs, `${path}.gateway6`);
  out.dns = cfg.dns.map((d, i) => checkDnsServer(d, `${path}.dns[${i}]`));
  const dupDns = out.dns.findIndex((d, i) => out.dns.indexOf(d) !== i);
  if (dupDns >= 0) throw ErrInvalidArgument(`${path}.dns[${dupDns}]: ${out.dns[dupDns]} is listed twice`);
  out.search = cfg.search.map((s, i) => {
    refuseIf(dnsNameReason(s, 'search domain'), `${path}.search[${i}]`);
    return s.toLowerCase();
  });
  if (cfg.mtu !== undefined) out.mtu = checkMtu(cfg.mtu, cidrs.some((c) => c.family === 6), `${path}.mtu`);
  if (cfg.network !== undefined) out.network = cfg.network;
  return out;
}

/**
 * A gateway must be on-link: inside one of the NIC's prefixes of its family and not one of the NIC's
 * own addresses. An IPv6 link-local gateway (fe80::/10, what routers advertise) is on-link by definition.
 */
export function checkGateway(input: string, family: Family, cidrs: readonly Cidr[], path: string): string {
  const r = parseIp(input);
  if (!r.ok) throw ErrInvalidArgument(`${path}: ${r.reason}`);
  const ip = r.value;
  const name = family === 4 ? 'IPv4' : 'IPv6';
  if (familyOf(ip) !== family) throw ErrInvalidArgument(`${path}: ${ipText(ip)} is not an ${name} address`);
  const text = ipText(ip);
  if (family === 6 && ip.range() === 'linkLocal') return text;
  const bad = unusableReason(ip);
  if (bad) throw ErrInvalidArgument(`${path}: ${bad}`);
  const own = cidrs.filter((c) => c.family === family);
  if (own.length === 0) throw ErrInvalidArgument(`${path}: ${text} cannot be reached: the NIC has no ${name} address`);
  if (own.some((c) => c.address === text)) throw ErrInvalidArgument(`${path}: ${text} is the NIC's own address`);
  if (!own.some((c) => contains(c, ip))) throw ErrInvalidArgument(`${path}: ${text} is off-link: it is in none of the NIC's ${name} prefixes (${own.map((c) => c.text).join(', ')})`);
  return text;
}

export function checkDnsServer(input: string, path: string): string {
  const r = parseIp(input);
  if (!r.ok) throw ErrInvalidArgument(`${path}: ${r.reason}`);
  const range = r.value.range();
  if (range === 'unspecified' || range === 'multicast' || range === 'broadcast') throw ErrInvalidArgument(`${path}: ${ipText(r.value)} cannot be a DNS server`);
  return ipText(r.value);
}

export function checkMtu(mtu: number, ipv6: boolean, path: string): number {
  if (!Number.isInteger(mtu) || mtu < MinMtu || mtu > MaxMtu) throw ErrInvalidArgument(`${path}: ${mtu} is out of range ${MinMtu}..${MaxMtu}`);
  if (ipv6 && mtu < MinMtuIpv6) throw ErrInvalidArgument(`${path}: ${mtu} is below ${MinMtuIpv6}, the least IPv6 allows`);
  return mtu;
}

function refuseIf(reason: string | undefined, path: string): void {
  if (reason) throw ErrInvalidArgument(`${path}: ${reason}`);
}

function sameSeparators(s: string, sep: string): boolean {
  return [2, 5, 8, 11, 14].every((i) => s[i] === sep);
}

/** The first zod issue as one line with its field path. */
export function zodRefusal(error: z.ZodError, base: string) {
  const issue = error.issues[0]!;
  const path = issue.path.reduce<string>((p, k) => (typeof k === 'number' ? `${p}[${k}]` : `${p}.${String(k)}`), base);
  let message = issue.message;
  if (issue.code === 'invalid_union') message = "expected 'dhcp' or 'static'";
  if (issue.code === 'unrecognized_keys') message = `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => JSON.stringify(clip(k, 40))).join(', ')}`;
  return ErrInvalidArgument(`${path}: ${message.charAt(0).toLowerCase()}${message.slice(1)}`);
}
