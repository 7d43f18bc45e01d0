/**
 * Public addresses of failed-over VMs as nftables rules (docs/failover-public-ips.md).
 *
 * Input: a failover's mappings, each a public address, the VM's DR address of the same family and
 * an allow-list (`tcp/22`, `udp/60000-61000`, `icmp`), plus the host's uplink interface when known.
 * Output: one `inet` table per failover, rendered as an `nft -f` script that replaces the table in
 * one transaction (`table X {}` then `delete table X` then the table), so applying it twice leaves
 * one table, never two copies of a rule; and the script that deletes it whether or not it exists.
 *
 * The table, per mapping:
 * - prerouting (nat, dstnat): the public address's allowed ports → the DR address, ports kept;
 * - guard (filter, prerouting after dstnat): whatever is still addressed to the public address was
 *   not allowed (a port off the list, or the host's own services on that address): dropped and
 *   counted. Only IPv6 neighbour discovery passes, so a host holding the address keeps answering it;
 * - postrouting (nat, srcnat): the VM's new outbound connections leave from the public address
 *   (out of the uplink only, when one is named);
 * - forward (filter, only with an uplink): from the uplink, the DR address takes only what came
 *   through the public address (and the replies of its own connections), so the allow-list cannot be
 *   side-stepped by routing to the DR address directly.
 * Every value is checked again here (addresses canonical, names from a fixed alphabet), so nothing
 * from a request reaches the script unchecked.
 */
import { ErrInvalidArgument } from '../../../shared/errors.js';
import { familyOf, parseIp } from './address.js';

export const MaxAllowEntries = 64;
/** The prefix of every table this module makes; hosts list and remove only these. */
export const NatTablePrefix = 'lifeboat_';

export type AllowEntry = { proto: 'tcp' | 'udp'; from: number; to: number } | { proto: 'icmp' };

/** One public address as applied: canonical addresses of one family, a normalised allow-list. */
export interface PublicIpRule {
  address: string;
  drAddress: string;
  allow: string[];
}

export interface NatOptions {
  /** The interface facing the Internet: SNAT only out of it, and the forward filter from it. */
  uplink?: string | undefined;
}

const InterfaceName = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
const TableName = /^lifeboat_[a-z0-9_]{1,56}$/;

/** `tcp/22`, `udp/1000-2000`, `icmp` (echo; ICMPv6 echo for IPv6) → an entry; one line naming the field when not. */
export function parseAllowEntry(text: unknown, path: string): AllowEntry {
  if (typeof text !== 'string') throw ErrInvalidArgument(`${path} must be a string like tcp/443, udp/60000-61000 or icmp`);
  const t = text.trim().toLowerCase();
  if (t === 'icmp') return { proto: 'icmp' };
  const m = /^(tcp|udp)\/(\d{1,5})(?:-(\d{1,5}))?$/.exec(t);
  if (!m) throw ErrInvalidArgument(`${path}: ${JSON.stringify(text.slice(0, 40))} is not tcp/PORT, udp/PORT, tcp/FROM-TO, udp/FROM-TO or icmp`);
  const from = Number(m[2]);
  const to = m[3] === undefined ? from : Number(m[3]);
  for (const p of [from, to]) if (p < 1 || p > 65535) throw ErrInvalidArgument(`${path}: port ${p} is not from 1 to 65535`);
  if (to < from) throw ErrInvalidArgument(`${path}: the range ${from}-${to} runs backwards`);
  return { proto: m[1] as 'tcp' | 'udp', from, to };
}

export function allowText(e: AllowEntry): string {
  return e.proto === 'icmp' ? 'icmp' : `${e.proto}/${e.from === e.to ? e.from : `${e.from}-${e.to}`}`;
}

/** A whole allow-list, normalised; an entry given twice or overlapping another of its protocol is refused. */
export function parseAllow(input: unknown, path = 'allow'): string[] {
  if (!Array.isArray(input)) throw ErrInvalidArgument(`${path} must be a list like ["tcp/22", "tcp/443", "icmp"]`);
  if (input.length > MaxAllowEntries) throw ErrInvalidArgument(`${path}: at most ${MaxAllowEntries} entries (got ${input.length})`);
  const entries = input.map((x, i) => parseAllowEntry(x, `${path}[${i}]`));
  entries.forEach((a, i) => {
    for (let j = 0; j < i; j++) {
      const b = entries[j]!;
      if (a.proto !== b.proto) continue;
      if (a.proto === 'icmp' || (b.proto !== 'icmp' && a.from <= b.to && b.from <= a.to)) {
        throw ErrInvalidArgument(`${path}[${i}]: ${allowText(a)} overlaps ${path}[${j}] ${allowText(b)}`);
      }
    }
  });
  return entries.map(allowText);
}

/** The table of a failover: `lifeboat_` and its id with `-` as `_` (fo-3f9a → lifeboat_fo_3f9a). */
export function natTableName(failoverId: string): string {
  const name = `${NatTablePrefix}${failoverId.toLowerCase().replace(/-/g, '_')}`;
  if (!TableName.test(name)) throw new Error(`failover id ${JSON.stringify(failoverId)} makes no nftables table name`);
  return name;
}

/** The failover id a table of ours belongs to, or undefined for a table that is not ours. */
export function failoverOfTable(table: string): string | undefined {
  return TableName.test(table) ? table.slice(NatTablePrefix.length).replace(/_/g, '-') : undefined;
}

/** Replaces the failover's table atomically (none when rules is empty: the table is only deleted). */
export function renderNatTable(table: string, rules: readonly PublicIpRule[], options: NatOptions = {}): string {
  if (!TableName.test(table)) throw new Error(`${table} is not a table name of ours`);
  if (options.uplink !== undefined && !InterfaceName.test(options.uplink)) throw new Error(`${options.uplink} is not an interface name`);
  const checked = rules.map(checkRule);
  const lines = [`table inet ${table} {}`, `delete table inet ${table}`];
  if (checked.length === 0) return `${lines.join('\n')}\n`;
  const iif = options.uplink ? `iifname "${options.uplink}" ` : '';
  const oif = options.uplink ? `oifname "${options.uplink}" ` : '';
  const pre: string[] = [];
  const guard: string[] = [];
  const post: string[] = [];
  const fwd: string[] = [];
  for (const r of checked) {
    const ip = r.family === 4 ? 'ip' : 'ip6';
    const entries = r.allow.map((a) => parseAllowEntry(a, 'allow'));
    for (const proto of ['tcp', 'udp'] as const) {
      const ports = entries.flatMap((e) => (e.proto === proto ? [e.from === e.to ? `${e.from}` : `${e.from}-${e.to}`] : []));
      if (ports.length > 0) pre.push(`${iif}${ip} daddr ${r.address} ${proto} dport { ${ports.join(', ')} } dnat ${ip} to ${r.drAddress}`);
    }
    if (entries.some((e) => e.proto === 'icmp')) {
      pre.push(r.family === 4
        ? `${iif}ip daddr ${r.address} icmp type echo-request dnat ip to ${r.drAddress}`
        : `${iif}ip6 daddr ${r.address} icmpv6 type echo-request dnat ip6 to ${r.drAddress}`);
    }
    if (r.family === 6) guard.push(`ip6 daddr ${r.address} icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept`);
    guard.push(`${ip} daddr ${r.address} counter drop`);
    post.push(`${oif}${ip} saddr ${r.drAddress} snat ${ip} to ${r.address}`);
    if (options.uplink) {
      fwd.push(`${iif}${ip} daddr ${r.drAddress} ct state established,related accept`);
      fwd.push(`${iif}${ip} daddr ${r.drAddress} ct status dnat ct original ${ip} daddr ${r.address} accept`);
      fwd.push(`${iif}${ip} daddr ${r.drAddress} counter drop`);
    }
  }
  const chain = (name: string, hook: string, body: string[]) => [`  chain ${name} {`, `    ${hook}`, ...body.map((l) => `    ${l}`), '  }'];
  lines.push(`table inet ${table} {`,
    ...chain('prerouting', 'type nat hook prerouting priority dstnat; policy accept;', pre),
    ...chain('guard', 'type filter hook prerouting priority dstnat + 10; policy accept;', guard),
    ...chain('postrouting', 'type nat hook postrouting priority srcnat; policy accept;', post),
    ...(fwd.length > 0 ? chain('forward', 'type filter hook forward priority filter; policy accept;', fwd) : []),
    '}');
  return `${lines.join('\n')}\n`;
}

/** Deletes the failover's table; nothing happens when there is none. */
export function renderNatDelete(table: string): string {
  return renderNatTable(table, []);
}

function checkRule(r: PublicIpRule, i: number): PublicIpRule & { family: 4 | 6 } {
  const pub = parseIp(r.address);
  const dr = parseIp(r.drAddress);
  if (!pub.ok || pub.value.toString() !== r.address) throw new Error(`rules[${i}].address ${JSON.stringify(r.address)} is not a canonical address`);
  if (!dr.ok || dr.value.toString() !== r.drAddress) throw new Error(`rules[${i}].drAddress ${JSON.stringify(r.drAddress)} is not a canonical address`);
  const family = familyOf(pub.value);
  if (familyOf(dr.value) !== family) throw new Error(`rules[${i}]: ${r.address} and ${r.drAddress} are of different families`);
  return { ...r, allow: parseAllow(r.allow, `rules[${i}].allow`), family };
}
