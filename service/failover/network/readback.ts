/**
 * Read back, don't assume: what a failed-over guest really has (addresses, routes, DNS), beside what
 * the plan meant it to have, for the drill report.
 *
 * Input, either of:
 * - four texts the guest printed (`ip -j addr`, `ip -j route`, `ip -6 -j route`, /etc/resolv.conf),
 *   e.g. cut from its serial console by parseConsoleReport (cloud-init.ts's consoleReport prints them);
 * - qemu-guest-agent's `guest-network-get-interfaces` answer (addresses only: routes and DNS unknown).
 * Output: Observed, and compareIntent's per-NIC intent beside result with a list of differences.
 * Failure: LifeboatError('corrupt') for text that is not what the command prints (the guest's output is
 * not trusted: sizes are bounded and shapes checked).
 */
import { ErrCorrupt } from '../../../shared/errors.js';
import { type Family, familyOf, ipText, makeCidr, parseIp } from './address.js';
import type { NicPlan } from './mappings.js';
import { normaliseMac } from './settings.js';

export const ConsoleReportBegin = '=====LIFEBOAT-NET-BEGIN=====';
export const ConsoleReportEnd = '=====LIFEBOAT-NET-END=====';
export const ConsoleReportSections = ['--- ip -j addr', '--- ip -j route', '--- ip -6 -j route', '--- resolv.conf'] as const;
export const MaxReadbackText = 4 * 1024 * 1024;

/**
 * What the guest printed. The three `ip -j` outputs may also come already parsed (the test guest's
 * readiness report, service/guest/ready.ts, hands them over as JSON values).
 */
export interface GuestNetworkTexts {
  addr: string | readonly unknown[];
  route4: string | readonly unknown[];
  route6: string | readonly unknown[];
  resolvConf: string;
}

export interface ObservedNic {
  mac: string;
  name: string;
  /** Canonical CIDRs, IPv6 link-local (fe80::/10) left out. */
  addresses: string[];
  mtu?: number;
}

export interface ObservedRoute {
  family: Family;
  /** "0.0.0.0/0" and "::/0" for default routes. */
  to: string;
  via?: string;
  dev?: string;
}

export interface Observed {
  nics: ObservedNic[];
  /** Undefined when not read (the guest agent reports no routes). */
  routes?: ObservedRoute[];
  /** Undefined when not read, or when resolv.conf points at a local stub resolver only. */
  dns?: string[];
  search?: string[];
  /** Why something could not be read. */
  unknown: string[];
}

export type DifferenceKind = 'missing-nic' | 'missing-address' | 'extra-address' | 'missing-default-route' | 'wrong-default-route' | 'missing-dns' | 'no-dhcp-address' | 'wrong-mtu';

export interface Difference {
  mac: string;
  kind: DifferenceKind;
  detail: string;
}

export interface NicComparison {
  mac: string;
  name: string;
  intent: { mode: 'dhcp' | 'static'; addresses: string[]; gateway4?: string; gateway6?: string; dns: string[]; mtu?: number };
  observed?: { name: string; addresses: string[]; defaultRoutes: ObservedRoute[]; mtu?: number };
  differences: Difference[];
  /** What the guest has beyond the plan where the plan says nothing (see Comparison.notices). */
  notices: string[];
}

export interface Comparison {
  ok: boolean;
  nics: NicComparison[];
  differences: Difference[];
  /**
   * What the guest has where the plan says nothing, shown but not a difference: addresses of a family
   * the plan gives the NIC none of (IPv6 from router advertisements on an IPv4-only NIC: the kernel's
   * default, on the primary as at the DR site), and default routes of a family without a planned gateway.
   */
  notices: string[];
  /** What could not be checked, and why (routes or DNS not read). */
  unchecked: string[];
}

/** The last complete report between the markers in a console log, or undefined if there is none. */
export function parseConsoleReport(consoleText: string): GuestNetworkTexts | undefined {
  const text = consoleText.replace(/\r/g, '');
  const end = text.lastIndexOf(ConsoleReportEnd);
  if (end < 0) return undefined;
  const begin = text.lastIndexOf(ConsoleReportBegin, end);
  if (begin < 0) return undefined;
  const body = text.slice(begin + ConsoleReportBegin.length, end);
  const parts: string[] = [];
  let rest = body;
  for (const marker of ConsoleReportSections) {
    const at = rest.indexOf(`${marker}\n`);
    if (at < 0) return undefined;
    if (parts.length > 0) parts[parts.length - 1] = rest.slice(0, at);
    rest = rest.slice(at + marker.length + 1);
    parts.push('');
  }
  parts[parts.length - 1] = rest;
  const [addr, route4, route6, resolvConf] = parts.map((p) => p.trim()) as [string, string, string, string];
  return { addr, route4, route6, resolvConf };
}

/** Observed from the four texts. */
export function parseGuestNetwork(texts: GuestNetworkTexts): Observed {
  const nics = parseIpAddr(texts.addr);
  const byName = new Map(nics.map((n) => [n.name, n]));
  const routes = [...parseIpRoute(texts.route4, 4), ...parseIpRoute(texts.route6, 6)].filter((r) => r.dev === undefined || byName.has(r.dev) || r.to.endsWith('/0'));
  const resolv = parseResolvConf(texts.resolvConf);
  const unknown: string[] = [];
  let dns: string[] | undefined = resolv.nameservers;
  if (dns.length > 0 && dns.every((d) => d.startsWith('127.'))) {
    unknown.push(`dns: resolv.conf names only the local stub resolver ${dns.join(', ')}; the upstream servers are not in it`);
    dns = undefined;
  }
  return { nics, routes, ...(dns ? { dns } : {}), search: resolv.search, unknown };
}

/** `ip -j addr` → NICs with a MAC (loopback and tunnels without one are left out). */
export function parseIpAddr(text: string | readonly unknown[]): ObservedNic[] {
  const list = jsonArray(text, 'ip -j addr');
  const out: ObservedNic[] = [];
  for (const item of list) {
    if (!isRecord(item)) throw ErrCorrupt('ip -j addr: an entry is not an object');
    const mac = typeof item.address === 'string' ? normaliseMac(item.address) : undefined;
    if (!mac?.ok || typeof item.ifname !== 'string') continue;
    const addresses: string[] = [];
    for (const a of Array.isArray(item.addr_info) ? item.addr_info : []) {
      if (!isRecord(a) || typeof a.local !== 'string' || typeof a.prefixlen !== 'number') continue;
      const cidr = cidrOf(a.local, a.prefixlen);
      if (cidr) addresses.push(cidr);
    }
    out.push({ mac: mac.mac, name: item.ifname, addresses, ...(typeof item.mtu === 'number' ? { mtu: item.mtu } : {}) });
  }
  return out;
}

/** `ip -j route` or `ip -6 -j route` → routes, "default" written as 0.0.0.0/0 or ::/0. */
export function parseIpRoute(text: string | readonly unknown[], family: Family): ObservedRoute[] {
  const what = family === 4 ? 'ip -j route' : 'ip -6 -j route';
  const out: ObservedRoute[] = [];
  for (const item of jsonArray(text, what)) {
    if (!isRecord(item) || typeof item.dst !== 'string') throw ErrCorrupt(`${what}: an entry has no dst`);
    // Local, broadcast, multicast and unreachable routes say nothing about the configuration asked for.
    if (typeof item.type === 'string' && item.type !== 'unicast') continue;
    const to = item.dst === 'default' ? (family === 4 ? '0.0.0.0/0' : '::/0') : item.dst;
    const r: ObservedRoute = { family, to };
    if (typeof item.gateway === 'string') {
      const gw = parseIp(item.gateway);
      if (gw.ok) r.via = ipText(gw.value);
    }
    if (typeof item.dev === 'string') r.dev = item.dev;
    out.push(r);
  }
  return out;
}

/** nameserver and search lines of resolv.conf (comments and other options ignored). */
export function parseResolvConf(text: string): { nameservers: string[]; search: string[] } {
  if (text.length > MaxReadbackText) throw ErrCorrupt('resolv.conf: too long');
  const nameservers: string[] = [];
  let search: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const [key, ...words] = line.split(/\s+/);
    if (key === 'nameserver' && words[0]) {
      const ip = parseIp(words[0]);
      if (ip.ok) nameservers.push(ipText(ip.value));
    } else if (key === 'search' || key === 'domain') {
      search = words.map((w) => w.toLowerCase());
    }
  }
  return { nameservers, search };
}

/** qemu-guest-agent's guest-network-get-interfaces answer (with or without its `return` wrapper). */
export function parseGuestAgentInterfaces(answer: unknown): Observed {
  const list = isRecord(answer) && 'return' in answer ? answer.return : answer;
  if (!Array.isArray(list)) throw ErrCorrupt('guest-network-get-interfaces: the answer is not a list');
  const nics: ObservedNic[] = [];
  for (const item of list) {
    if (!isRecord(item) || typeof item.name !== 'string') continue;
    const mac = typeof item['hardware-address'] === 'string' ? normaliseMac(item['hardware-address']) : undefined;
    if (!mac?.ok) continue;
    const addresses: string[] = [];
    for (const a of Array.isArray(item['ip-addresses']) ? item['ip-addresses'] : []) {
      if (!isRecord(a) || typeof a['ip-address'] !== 'string' || typeof a.prefix !== 'number') continue;
      const cidr = cidrOf(a['ip-address'], a.prefix);
      if (cidr) addresses.push(cidr);
    }
    nics.push({ mac: mac.mac, name: item.name, addresses });
  }
  return { nics, unknown: ['routes: the guest agent does not report routes', 'dns: the guest agent does not report DNS servers'] };
}

/** The plan beside what the guest has; every difference named. */
export function compareIntent(plans: readonly NicPlan[], observed: Observed): Comparison {
  const unchecked = [...observed.unknown];
  const nics = plans.map((plan) => compareNic(plan, observed));
  const differences = nics.flatMap((n) => n.differences);
  const notices = nics.flatMap((n) => n.notices);
  return { ok: differences.length === 0, nics, differences, notices, unchecked };
}

function compareNic(plan: NicPlan, observed: Observed): NicComparison {
  const c = plan.config;
  const intent: NicComparison['intent'] = c.mode === 'static'
    ? { mode: 'static', addresses: [...c.addresses], dns: [...c.dns], ...(c.gateway4 ? { gateway4: c.gateway4 } : {}), ...(c.gateway6 ? { gateway6: c.gateway6 } : {}) }
    : { mode: 'dhcp', addresses: [], dns: [] };
  if (c.mtu !== undefined) intent.mtu = c.mtu;
  const diffs: Difference[] = [];
  const notices: string[] = [];
  const add = (kind: DifferenceKind, detail: string) => diffs.push({ mac: plan.mac, kind, detail });
  const nic = observed.nics.find((n) => n.mac === plan.mac);
  if (!nic) {
    add('missing-nic', `no interface with MAC ${plan.mac} in the guest`);
    return { mac: plan.mac, name: plan.name, intent, differences: diffs, notices };
  }

  const defaultRoutes = (observed.routes ?? []).filter((r) => r.to.endsWith('/0') && (r.dev === undefined || r.dev === nic.name));
  const result: NicComparison['observed'] = { name: nic.name, addresses: [...nic.addresses], defaultRoutes, ...(nic.mtu !== undefined ? { mtu: nic.mtu } : {}) };

  if (intent.mode === 'dhcp') {
    if (!nic.addresses.some((a) => !a.includes(':'))) add('no-dhcp-address', `${nic.name} has no IPv4 address from DHCP`);
  } else {
    for (const a of intent.addresses) if (!nic.addresses.includes(a)) add('missing-address', `${a} is not on ${nic.name}`);
    const planned = (v6: boolean) => intent.addresses.some((a) => a.includes(':') === v6);
    for (const a of nic.addresses) {
      if (intent.addresses.includes(a)) continue;
      if (planned(a.includes(':'))) add('extra-address', `${a} is on ${nic.name} but not in the plan`);
      else notices.push(`nic ${plan.mac}: ${a} is on ${nic.name}; the plan gives it no IPv${a.includes(':') ? 6 : 4} address`);
    }
    if (observed.routes) {
      for (const [family, gw] of [[4, intent.gateway4], [6, intent.gateway6]] as const) {
        if (!gw) {
          const to = family === 4 ? '0.0.0.0/0' : '::/0';
          for (const r of defaultRoutes.filter((x) => x.to === to)) notices.push(`nic ${plan.mac}: default route ${to} via ${r.via ?? '(no gateway)'} on ${nic.name}; the plan gives it no IPv${family} gateway`);
          continue;
        }
        const to = family === 4 ? '0.0.0.0/0' : '::/0';
        const mine = defaultRoutes.filter((r) => r.to === to);
        if (mine.some((r) => r.via === gw)) continue;
        if (mine.length > 0) add('wrong-default-route', `the default route ${to} on ${nic.name} goes via ${mine.map((r) => r.via ?? '(no gateway)').join(', ')}, not ${gw}`);
        else add('missing-default-route', `no default route ${to} via ${gw} on ${nic.name}`);
      }
    }
    if (observed.dns) {
      for (const d of intent.dns) if (!observed.dns.includes(d)) add('missing-dns', `DNS server ${d} is not in resolv.conf`);
    }
  }
  if (intent.mtu !== undefined && nic.mtu !== undefined && nic.mtu !== intent.mtu) add('wrong-mtu', `${nic.name} has MTU ${nic.mtu}, not ${intent.mtu}`);
  return { mac: plan.mac, name: plan.name, intent, observed: result, differences: diffs, notices };
}

function cidrOf(address: string, prefix: number): string | undefined {
  const ip = parseIp(address);
  if (!ip.ok) return undefined;
  if (familyOf(ip.value) === 6 && ip.value.range() === 'linkLocal') return undefined;
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > (familyOf(ip.value) === 4 ? 32 : 128)) return undefined;
  return makeCidr(ip.value, prefix).text;
}

function jsonArray(text: string | readonly unknown[], what: string): readonly unknown[] {
  if (typeof text !== 'string') {
    if (!Array.isArray(text)) throw ErrCorrupt(`${what}: expected a JSON list`);
    return text;
  }
  if (text.length > MaxReadbackText) throw ErrCorrupt(`${what}: output too long`);
  const trimmed = text.trim();
  if (trimmed === '') return [];
  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch (err) {
    throw ErrCorrupt(`${what}: not JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(value)) throw ErrCorrupt(`${what}: expected a JSON list`);
  return value;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
