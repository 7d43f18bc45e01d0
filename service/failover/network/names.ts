/**
 * Names a tenant or operator types that end up in guest files, scripts and commands: DR network names,
 * DNS search domains, host names. Each checker returns a reason (without the field path) or undefined.
 * The allowed alphabets exclude every shell and PowerShell metacharacter (quotes, $, `, ;, |, &, <, >,
 * parentheses, braces, spaces, newlines), so such a name is refused here, not quoted later.
 */
import { clip } from './address.js';

export const MaxNetworkNameLength = 63;
export const MaxDnsNameLength = 253;

/** A DR network's name: letters, digits, '.', '_', '-'; starts with a letter or digit; at most 63. */
export function networkNameReason(name: unknown): string | undefined {
  if (typeof name !== 'string' || name.length === 0) return 'a network name is required';
  if (name.length > MaxNetworkNameLength) return `network name ${clip(name)} is longer than ${MaxNetworkNameLength} characters`;
  if (!isAlnum(name[0]!)) return `network name ${JSON.stringify(clip(name))} must start with a letter or digit`;
  for (const ch of name) {
    if (!isAlnum(ch) && ch !== '.' && ch !== '_' && ch !== '-') return `network name ${JSON.stringify(clip(name))} may hold only letters, digits, '.', '_' and '-'`;
  }
  return undefined;
}

/**
 * A DNS name (search domain) per RFC 1123: dot-separated labels of letters, digits and hyphens,
 * 1..63 characters each, not starting or ending with a hyphen, at most 253 in all, no trailing dot.
 */
export function dnsNameReason(name: unknown, what = 'domain'): string | undefined {
  if (typeof name !== 'string' || name.length === 0) return `a ${what} is required`;
  const shown = JSON.stringify(clip(name));
  if (name.length > MaxDnsNameLength) return `${what} ${shown} is longer than ${MaxDnsNameLength} characters`;
  for (const label of name.split('.')) {
    if (label.length === 0) return `${what} ${shown} has an empty label`;
    if (label.length > 63) return `${what} ${shown} has a label longer than 63 characters`;
    if (label.startsWith('-') || label.endsWith('-')) return `${what} ${shown} has a label starting or ending with '-'`;
    for (const ch of label) if (!isAlnum(ch) && ch !== '-') return `${what} ${shown} may hold only letters, digits, '-' and '.'`;
  }
  return undefined;
}

/** A host name for the guest (meta-data local-hostname, config drive hostname): one DNS label or a DNS name. */
export function hostNameReason(name: unknown): string | undefined {
  return dnsNameReason(name, 'host name');
}

function isAlnum(ch: string): boolean {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}
