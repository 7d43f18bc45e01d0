/**
 * Server names and authorization-entry patterns, as Hyper-V Replica has them: a pattern is a DNS
 * name with at most one '*', which matches any run of characters (dots included, or none). Names and
 * patterns compare case-insensitively; both are stored lower-case.
 */
import { ErrInvalidArgument } from '../../shared/errors.js';

export const MaxDnsNameLength = 253;
const labelPattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** Lower-cases and validates a server's DNS name; throws 'invalid_argument' with the reason. */
export function normalizeServerName(name: string): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > MaxDnsNameLength) {
    throw ErrInvalidArgument(`server name must be 1 to ${MaxDnsNameLength} characters`);
  }
  const lower = name.toLowerCase().replace(/\.$/, '');
  for (const label of lower.split('.')) {
    if (!labelPattern.test(label)) throw ErrInvalidArgument(`server name ${JSON.stringify(name.slice(0, 80))} is not a DNS name (label ${JSON.stringify(label.slice(0, 63))})`);
  }
  return lower;
}

/**
 * Lower-cases and validates a pattern: at most one '*', the rest DNS-name characters. Refuses
 * anything else with a clear reason.
 */
export function normalizePattern(pattern: string): string {
  if (typeof pattern !== 'string' || pattern.length === 0 || pattern.length > MaxDnsNameLength) {
    throw ErrInvalidArgument(`server pattern must be 1 to ${MaxDnsNameLength} characters`);
  }
  const lower = pattern.toLowerCase();
  const stars = lower.split('*').length - 1;
  if (stars > 1) throw ErrInvalidArgument(`server pattern ${JSON.stringify(pattern.slice(0, 80))} has ${stars} '*'; at most one is allowed (examples: *.contoso.com, host*, *)`);
  if (!/^[a-z0-9.*-]+$/.test(lower)) throw ErrInvalidArgument(`server pattern ${JSON.stringify(pattern.slice(0, 80))} may hold only letters, digits, '-', '.' and one '*'`);
  if (lower.includes('..') || lower.startsWith('.') || lower.endsWith('.')) throw ErrInvalidArgument(`server pattern ${JSON.stringify(pattern.slice(0, 80))} has an empty label`);
  return lower;
}

/** True when the (normalized) name matches the (normalized) pattern. */
export function patternMatches(pattern: string, name: string): boolean {
  const star = pattern.indexOf('*');
  if (star < 0) return pattern === name;
  const head = pattern.slice(0, star);
  const tail = pattern.slice(star + 1);
  return name.length >= head.length + tail.length && name.startsWith(head) && name.endsWith(tail);
}

/**
 * The entry that governs name among candidates: an exact pattern beats a wildcard, then the most
 * literal characters, then the oldest (candidates come oldest first).
 */
export function bestMatch<T extends { pattern: string }>(entries: T[], name: string): T | undefined {
  let best: T | undefined;
  let bestScore = -1;
  for (const e of entries) {
    if (!patternMatches(e.pattern, name)) continue;
    const score = e.pattern.includes('*') ? e.pattern.length - 1 : 10_000;
    if (score > bestScore) {
      best = e;
      bestScore = score;
    }
  }
  return best;
}
