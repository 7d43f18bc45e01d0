/**
 * The NoCloud files a Linux guest's cloud-init reads from the `cidata` seed: meta-data, user-data and
 * network-config (version 2).
 *
 * Input: resolved NIC plans (mappings.ts) and the guest's identity (a fresh instance id per failover,
 * so cloud-init treats the boot as a new instance and applies the network again; a host name).
 * Output: the three files' text.
 * Failure: LifeboatError('invalid_argument') for a host name or instance id that is not a plain name.
 *
 * Rules the rendering keeps, each for a reason found on cloud-init 22.4 (Debian 12):
 * - the IPv4 default route is written `routes: [{ to: 0.0.0.0/0, via }]`; 22.4's renderers reject
 *   `to: default`;
 * - the IPv6 default route is written as the v2 key `gateway6`, not as a route: 22.4 turns a route
 *   `to: ::/0` into `::/64` in its eni, networkd and sysconfig renderers (the prefix 0 is lost on the
 *   way through its v1 network state), while `gateway6` comes out as ifupdown's `gateway`, networkd's
 *   `Gateway=` and sysconfig's `IPV6_DEFAULTGW` (test/failover/network-cloud-init.test.ts shows both);
 * - every string value is double-quoted: cloud-init reads YAML 1.1 (PyYAML), where an unquoted MAC made
 *   only of digits and colons (52:54:00:12:34:56) is a base-60 integer;
 * - NICs are matched by MAC and renamed to a stable name (`set-name`), so the plan names the same NIC
 *   whatever the DR hypervisor's NIC model makes the kernel call it.
 */
import { randomUUID } from 'node:crypto';
import { Document } from 'yaml';
import { ErrInvalidArgument } from '../../../shared/errors.js';
import type { NicPlan } from './mappings.js';
import { hostNameReason } from './names.js';
import { ConsoleReportBegin, ConsoleReportEnd, ConsoleReportSections } from './readback.js';

export interface GuestIdentity {
  /** Fresh per failover (newInstanceId). */
  instanceId: string;
  hostname: string;
}

export interface NoCloudFiles {
  'meta-data': string;
  'user-data': string;
  'network-config': string;
}

export interface UserDataOptions {
  /**
   * Print what the guest really has (ip -j addr, ip -j route, ip -6 -j route, resolv.conf) on the serial
   * console between markers once cloud-init's final stage runs, for readback.ts's parseConsoleReport.
   */
  consoleReport?: boolean;
  /** The serial device the report goes to; /dev/ttyS0 unless told. */
  consoleDevice?: string;
}

/** A fresh instance id: cloud-init re-applies network-config only when the id changes. */
export function newInstanceId(failoverId?: string): string {
  const tag = failoverId && isPlainId(failoverId) ? `${failoverId}-` : '';
  return `lifeboat-${tag}${randomUUID()}`;
}

export function renderMetaData(identity: GuestIdentity): string {
  checkIdentity(identity);
  return yamlText({ 'instance-id': identity.instanceId, 'local-hostname': identity.hostname });
}

/** A minimal #cloud-config: nothing but what the failover needs. */
export function renderUserData(options: UserDataOptions = {}): string {
  const doc: Record<string, unknown> = {};
  if (options.consoleReport) {
    const device = options.consoleDevice ?? '/dev/ttyS0';
    if (!/^\/dev\/[A-Za-z0-9]+$/.test(device)) throw ErrInvalidArgument(`consoleDevice: ${JSON.stringify(device)} is not a device path like /dev/ttyS0`);
    doc.runcmd = [['sh', '-c', consoleReportScript(device)]];
  }
  return `#cloud-config\n${Object.keys(doc).length > 0 ? yamlText(doc) : ''}`;
}

/** network-config version 2: one `ethernets` entry per NIC, matched by MAC. */
export function renderNetworkConfig(plans: readonly NicPlan[]): string {
  const ethernets: Record<string, unknown> = {};
  for (const p of plans) ethernets[p.name] = ethernet(p);
  return yamlText({ version: 2, ethernets });
}

export function renderNoCloudFiles(plans: readonly NicPlan[], identity: GuestIdentity, options: UserDataOptions = {}): NoCloudFiles {
  return { 'meta-data': renderMetaData(identity), 'user-data': renderUserData(options), 'network-config': renderNetworkConfig(plans) };
}

function ethernet(p: NicPlan): Record<string, unknown> {
  const e: Record<string, unknown> = { match: { macaddress: p.mac }, 'set-name': p.name };
  const c = p.config;
  if (c.mode === 'dhcp') {
    e.dhcp4 = true;
    e.dhcp6 = c.dhcp6 === true;
  } else {
    e.dhcp4 = false;
    e.dhcp6 = false;
    e.addresses = [...c.addresses];
    if (c.gateway4) e.routes = [{ to: '0.0.0.0/0', via: c.gateway4 }];
    if (c.gateway6) e.gateway6 = c.gateway6;
    // Static IPv6 with its gateway: router advertisements would add addresses and routes the plan
    // does not hold (networkd accepts them by default; ifupdown's inet6 static already does not).
    if (c.gateway6 && c.addresses.some((a) => a.includes(':'))) e['accept-ra'] = false;
    if (c.dns.length > 0 || c.search.length > 0) {
      const ns: Record<string, string[]> = {};
      if (c.dns.length > 0) ns.addresses = [...c.dns];
      if (c.search.length > 0) ns.search = [...c.search];
      e.nameservers = ns;
    }
  }
  if (c.mtu !== undefined) e.mtu = c.mtu;
  return e;
}

/** The shell the guest runs for the console report; fixed text, nothing from the tenant in it. */
export function consoleReportScript(device: string): string {
  const [addr, route4, route6, resolv] = ConsoleReportSections;
  return [
    '{',
    `echo '${ConsoleReportBegin}';`,
    `echo '${addr}'; ip -j addr;`,
    `echo '${route4}'; ip -j route;`,
    `echo '${route6}'; ip -6 -j route;`,
    `echo '${resolv}'; cat /etc/resolv.conf;`,
    `echo '${ConsoleReportEnd}';`,
    `} > ${device} 2>&1`,
  ].join(' ');
}

function checkIdentity(identity: GuestIdentity): void {
  if (!isPlainId(identity.instanceId)) throw ErrInvalidArgument(`instance-id: ${JSON.stringify(String(identity.instanceId).slice(0, 60))} may hold only letters, digits, '.', '_' and '-'`);
  const bad = hostNameReason(identity.hostname);
  if (bad) throw ErrInvalidArgument(`hostname: ${bad}`);
}

function isPlainId(s: string): boolean {
  return typeof s === 'string' && s.length > 0 && s.length <= 128 && /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(s);
}

function yamlText(value: unknown): string {
  const doc = new Document(value);
  return doc.toString({ defaultStringType: 'QUOTE_DOUBLE', defaultKeyType: 'PLAIN', lineWidth: 0 });
}
