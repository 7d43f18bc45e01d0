/**
 * IP addresses and prefixes for failover settings, through ipaddr.js (never regular expressions).
 *
 * Input: text as a tenant typed it ("10.0.0.5/24", "2001:DB8::5/64", "10.0.0.1").
 * Output: parsed values in canonical text (IPv4 dotted quad, IPv6 RFC 5952 compact, lower case).
 * Failure: each parser returns a reason (a short phrase without the field path) instead of throwing, so
 * callers put the field path in front of it and raise one LifeboatError.
 */
import ipaddr from 'ipaddr.js';

export type Family = 4 | 6;
export type Ip = ipaddr.IPv4 | ipaddr.IPv6;

/** An interface address with its prefix length. */
export interface Cidr {
  family: Family;
  ip: Ip;
  prefix: number;
  /** Canonical text of the address alone. */
  address: string;
  /** Canonical "address/prefix". */
  text: string;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

const refusedV4Ranges = new Set(['unspecified', 'broadcast', 'multicast', 'loopback', 'linkLocal']);
const refusedV6Ranges = new Set(['unspecified', 'multicast', 'loopback', 'linkLocal', 'ipv4Mapped']);
const classE = ipaddr.IPv4.parseCIDR('240.0.0.0/4');

/** An address without a prefix: strict dotted quad for IPv4, any RFC 4291 form for IPv6, no zone id. */
export function parseIp(text: string): Parsed<Ip> {
  if (typeof text !== 'string' || text.length === 0) return { ok: false, reason: 'an address is required' };
  if (text.length > 64) return { ok: false, reason: `${clip(text)} is not an IP address` };
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) {
    const ip = ipaddr.IPv4.parse(text);
    // Leading zeros ("010.0.0.1") would be read as octal by some tools and decimal by others.
    if (ip.toString() !== text) return { ok: false, reason: `${text} is not a plain dotted-quad IPv4 address (leading zeros?)` };
    return { ok: true, value: ip };
  }
  if (ipaddr.IPv6.isValid(text)) {
    const ip = ipaddr.IPv6.parse(text);
    if (ip.zoneId !== undefined) return { ok: false, reason: `${text}: a zone id (%…) is not allowed` };
    return { ok: true, value: ip };
  }
  return { ok: false, reason: `${clip(text)} is not an IP address` };
}

export function familyOf(ip: Ip): Family {
  return ip.kind() === 'ipv4' ? 4 : 6;
}

/** Canonical text: dotted quad, or RFC 5952 compact lower-case IPv6. */
export function ipText(ip: Ip): string {
  return ip.toString();
}

/** Why an address cannot be given to a host interface, or undefined when it can. */
export function unusableReason(ip: Ip): string | undefined {
  const range = ip.range();
  if (ip.kind() === 'ipv4') {
    if (refusedV4Ranges.has(range)) return `${ip.toString()} is a ${rangeWords(range)} address`;
    if ((ip as ipaddr.IPv4).match(classE)) return `${ip.toString()} is in the reserved range 240.0.0.0/4`;
    return undefined;
  }
  if (refusedV6Ranges.has(range)) return `${ip.toString()} is a ${rangeWords(range)} address`;
  return undefined;
}

/**
 * "address/prefix" for an interface: a valid address, a prefix in range (IPv4 1..32, IPv6 1..128),
 * and not the network or broadcast address of an IPv4 prefix (/31 and /32 have neither), nor the
 * subnet-router anycast address (host part all zeros) of an IPv6 prefix shorter than /127.
 */
export function parseInterfaceCidr(text: string): Parsed<Cidr> {
  if (typeof text !== 'string') return { ok: false, reason: 'an address/prefix is required' };
  const slash = text.lastIndexOf('/');
  if (slash < 0) return { ok: false, reason: `${clip(text)} has no prefix length (write it as address/prefix)` };
  const ipPart = text.slice(0, slash);
  const prefixPart = text.slice(slash + 1);
  const ip = parseIp(ipPart);
  if (!ip.ok) return ip;
  const family = familyOf(ip.value);
  const max = family === 4 ? 32 : 128;
  const prefix = decimal(prefixPart);
  if (prefix === undefined || prefix < 1 || prefix > max) return { ok: false, reason: `${clip(text)}: prefix /${clip(prefixPart, 8)} is out of range 1..${max}` };
  const unusable = unusableReason(ip.value);
  if (unusable) return { ok: false, reason: unusable };
  const cidr = makeCidr(ip.value, prefix);
  if (family === 4 && prefix <= 30) {
    const net = networkOf(cidr);
    if (ipEquals(ip.value, net.ip)) return { ok: false, reason: `${cidr.text} is the network address of ${net.text}` };
    const bcast = ipaddr.IPv4.broadcastAddressFromCIDR(cidr.text);
    if (ipEquals(ip.value, bcast)) return { ok: false, reason: `${cidr.text} is the broadcast address of ${net.text}` };
  }
  if (family === 6 && prefix < 127) {
    const net = networkOf(cidr);
    if (ipEquals(ip.value, net.ip)) return { ok: false, reason: `${cidr.text} is the subnet-router anycast address of ${net.text}` };
  }
  return { ok: true, value: cidr };
}

/** "network/prefix" for a subnet (mappings): the host part must be zero. Prefix 1..32 or 1..128. */
export function parseSubnet(text: string): Parsed<Cidr> {
  if (typeof text !== 'string') return { ok: false, reason: 'a subnet is required' };
  const slash = text.lastIndexOf('/');
  if (slash < 0) return { ok: false, reason: `${clip(text)} has no prefix length (write it as network/prefix)` };
  const ip = parseIp(text.slice(0, slash));
  if (!ip.ok) return ip;
  const max = familyOf(ip.value) === 4 ? 32 : 128;
  const prefix = decimal(text.slice(slash + 1));
  if (prefix === undefined || prefix < 1 || prefix > max) return { ok: false, reason: `${clip(text)}: prefix is out of range 1..${max}` };
  const cidr = makeCidr(ip.value, prefix);
  const net = networkOf(cidr);
  if (!ipEquals(net.ip, ip.value)) return { ok: false, reason: `${cidr.text} is not a network address (did you mean ${net.text}?)` };
  return { ok: true, value: net };
}

export function makeCidr(ip: Ip, prefix: number): Cidr {
  const address = ipText(ip);
  return { family: familyOf(ip), ip, prefix, address, text: `${address}/${prefix}` };
}

/** The network a CIDR lies in, as a Cidr whose address is the network address. */
export function networkOf(c: Cidr): Cidr {
  const bytes = c.ip.toByteArray();
  const masked = bytes.map((b, i) => b & maskByte(c.prefix, i));
  return makeCidr(ipaddr.fromByteArray(masked), c.prefix);
}

/** Whether ip lies inside the subnet c (same family, same leading prefix bits). */
export function contains(c: Cidr, ip: Ip): boolean {
  if (c.ip.kind() !== ip.kind()) return false;
  const a = c.ip.toByteArray();
  const b = ip.toByteArray();
  return a.every((byte, i) => (byte & maskByte(c.prefix, i)) === ((b[i] ?? 0) & maskByte(c.prefix, i)));
}

/** The address with `to`'s network part and ip's host part (both prefixes equal, same family). */
export function keepHostPart(ip: Ip, to: Cidr): Ip {
  const host = ip.toByteArray();
  const net = to.ip.toByteArray();
  return ipaddr.fromByteArray(net.map((b, i) => (b & maskByte(to.prefix, i)) | ((host[i] ?? 0) & ~maskByte(to.prefix, i) & 0xff)));
}

export function ipEquals(a: Ip, b: Ip): boolean {
  return a.kind() === b.kind() && ipText(a) === ipText(b);
}

/** IPv4 netmask ("255.255.255.0") or IPv6 mask ("ffff:ffff:ffff:ffff::") for a prefix. */
export function netmaskOf(family: Family, prefix: number): string {
  return family === 4 ? ipaddr.IPv4.subnetMaskFromPrefixLength(prefix).toString() : ipaddr.IPv6.subnetMaskFromPrefixLength(prefix).toString();
}

function maskByte(prefix: number, byteIndex: number): number {
  const bits = Math.max(0, Math.min(8, prefix - byteIndex * 8));
  return bits === 0 ? 0 : (0xff << (8 - bits)) & 0xff;
}

function decimal(text: string): number | undefined {
  if (text.length === 0 || text.length > 3) return undefined;
  for (const ch of text) if (ch < '0' || ch > '9') return undefined;
  if (text.length > 1 && text.startsWith('0')) return undefined;
  return Number(text);
}

function rangeWords(range: string): string {
  switch (range) {
    case 'unspecified': return 'unspecified';
    case 'broadcast': return 'limited broadcast';
    case 'multicast': return 'multicast';
    case 'loopback': return 'loopback';
    case 'linkLocal': return 'link-local';
    case 'ipv4Mapped': return 'IPv4-mapped';
    default: return range;
  }
}

/** A user's text shortened for a one-line message. */
export function clip(text: string, max = 60): string {
  const s = String(text);
  return s.length <= max ? s : `${s.slice(0, max)}…`;
}
