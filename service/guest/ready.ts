/**
 * Reads the readiness report that the test guest's lifeboat-guest-ready.service prints on its
 * serial console (format: docs/guest.md "Markers"). Input: console text (kernel and systemd lines
 * around it are fine, \r\n or \n). Output: the last complete report, or undefined when none is there
 * yet. A report whose JSON does not parse is treated as not there yet (a cut line).
 */
import { ReadyMarker } from './configure.js';

export interface GuestReadyReport {
  /** `ip -j addr`: one entry per interface, with addr_info[] (family, local, prefixlen). */
  addr: { ifname: string; address?: string; addr_info: { family: string; local: string; prefixlen: number }[] }[];
  /** `ip -j route` (IPv4). */
  route: { dst: string; gateway?: string; dev?: string }[];
  /** `ip -6 -j route`. */
  route6: { dst: string; gateway?: string; dev?: string }[];
  /** /etc/resolv.conf as it was. */
  resolvConf: string;
}

export { ReadyMarker };

function section(lines: string[], name: string): string | undefined {
  const b = lines.indexOf(`${name}-BEGIN`);
  const e = lines.indexOf(`${name}-END`, b + 1);
  if (b < 0 || e < 0) return undefined;
  return lines.slice(b + 1, e).join('\n');
}

export function parseGuestReady(consoleText: string): GuestReadyReport | undefined {
  const lines = consoleText.split(/\r?\n/).map((l) => l.replace(/\r/g, ''));
  const end = lines.lastIndexOf(`${ReadyMarker}-END`);
  if (end < 0) return undefined;
  const start = lines.lastIndexOf(ReadyMarker, end);
  if (start < 0) return undefined;
  const block = lines.slice(start + 1, end);
  try {
    const json = (name: string) => JSON.parse(section(block, name) || '[]') as never;
    return {
      addr: json('LIFEBOAT-IP-ADDR'),
      route: json('LIFEBOAT-IP-ROUTE'),
      route6: json('LIFEBOAT-IP6-ROUTE'),
      resolvConf: section(block, 'LIFEBOAT-RESOLV-CONF') ?? '',
    };
  } catch {
    return undefined;
  }
}
