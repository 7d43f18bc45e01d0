/**
 * The addresses of a public-address pool as the hoster writes them: single addresses and prefixes
 * (`203.0.113.10`, `203.0.113.16/29`, `2001:db8:f::/124`), expanded in order, through ipaddr.js.
 * A prefix gives every address in it but the ones no host may take: the network and broadcast
 * addresses of an IPv4 prefix up to /30, the subnet-router anycast address of an IPv6 prefix shorter
 * than /127 (the rules of address.ts for interfaces). Refused: unusable addresses (loopback,
 * multicast, link-local, …), a host part in a prefix, an address given twice, more than MaxPoolAddresses.
 */
import ipaddr from 'ipaddr.js';
import { ErrInvalidArgument } from '../../../shared/errors.js';
import type { Ip } from './address.js';
import { clip, parseIp, unusableReason } from './address.js';

export const MaxPoolAddresses = 1024;

export function expandPoolAddresses(input: unknown, path = 'addresses'): string[] {
  if (!Array.isArray(input) || input.length === 0) throw ErrInvalidArgument(`${path} must be a non-empty list of addresses and prefixes, like ["203.0.113.10", "203.0.113.16/29"]`);
  const out: string[] = [];
  const seen = new Map<string, number>();
  input.forEach((raw, i) => {
    const at = `${path}[${i}]`;
    if (typeof raw !== 'string') throw ErrInvalidArgument(`${at} must be a string`);
    for (const ip of expandOne(raw.trim(), at, MaxPoolAddresses - out.length)) {
      const text = ip.toString();
      const first = seen.get(text);
      if (first !== undefined) throw ErrInvalidArgument(`${at}: ${text} is already given by ${path}[${first}]`);
      seen.set(text, i);
      out.push(text);
    }
  });
  return out;
}

function expandOne(text: string, at: string, room: number): Ip[] {
  const slash = text.indexOf('/');
  if (slash < 0) {
    const ip = parseIp(text);
    if (!ip.ok) throw ErrInvalidArgument(`${at}: ${ip.reason}`);
    const bad = unusableReason(ip.value);
    if (bad) throw ErrInvalidArgument(`${at}: ${bad}`);
    if (room < 1) throw ErrInvalidArgument(`${at}: at most ${MaxPoolAddresses} addresses per pool`);
    return [ip.value];
  }
  const ip = parseIp(text.slice(0, slash));
  if (!ip.ok) throw ErrInvalidArgument(`${at}: ${ip.reason}`);
  const bits = ip.value.kind() === 'ipv4' ? 32 : 128;
  const prefixText = text.slice(slash + 1);
  const prefix = /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 1 && prefix <= bits)) throw ErrInvalidArgument(`${at}: ${clip(text)} has no prefix length from 1 to ${bits}`);
  const size = 2n ** BigInt(bits - prefix);
  const base = toBig(ip.value);
  if (base % size !== 0n) throw ErrInvalidArgument(`${at}: ${clip(text)} has host bits set (write the prefix as its network address)`);
  let first = base;
  let last = base + size - 1n;
  if (bits === 32 && prefix <= 30) { first += 1n; last -= 1n; }
  if (bits === 128 && prefix < 127) first += 1n;
  const count = last - first + 1n;
  if (count > BigInt(room)) throw ErrInvalidArgument(`${at}: ${clip(text)} holds ${count} usable addresses; at most ${MaxPoolAddresses} per pool`);
  const out: Ip[] = [];
  for (let n = first; n <= last; n++) {
    const a = fromBig(n, bits);
    const bad = unusableReason(a);
    if (bad) throw ErrInvalidArgument(`${at}: ${bad}`);
    out.push(a);
  }
  return out;
}

function toBig(ip: Ip): bigint {
  return ip.toByteArray().reduce((acc, b) => (acc << 8n) | BigInt(b), 0n);
}

function fromBig(n: bigint, bits: number): Ip {
  const bytes: number[] = [];
  for (let i = bits / 8 - 1; i >= 0; i--) bytes.push(Number((n >> BigInt(i * 8)) & 0xffn));
  return ipaddr.fromByteArray(bytes);
}
