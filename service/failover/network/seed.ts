/**
 * Seed media for a failed-over guest, each an ISO9660 image with Joliet and Rock Ridge names:
 * - `writeNoCloudSeed`: volume id `cidata`, meta-data, user-data and network-config at the root, for
 *   cloud-init's NoCloud datasource (Linux);
 * - `writeConfigDrive`: volume label `config-2`, openstack/latest/meta_data.json and network_data.json,
 *   for cloudbase-init's ConfigDriveService (Windows). See docs/failover-network.md for what each
 *   cloudbase-init version reads and what it cannot carry.
 *
 * Input: a directory the caller owns (the failover's work directory) and the files or plan.
 * Output: the ISO's path inside that directory (`cidata.iso`, `config-2.iso`), written whole or not at
 * all (built under a temporary name and renamed). Idempotent: a second call replaces the image.
 * Failure: LifeboatError('unavailable') when neither genisoimage nor xorriso is installed; the tool's
 * own message when it fails.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ErrInvalidArgument, LifeboatError } from '../../../shared/errors.js';
import { netmaskOf, parseInterfaceCidr } from './address.js';
import type { NoCloudFiles } from './cloud-init.js';
import type { NicPlan } from './mappings.js';
import { hostNameReason } from './names.js';

const execFileP = promisify(execFile);

export const NoCloudVolumeId = 'cidata';
export const ConfigDriveVolumeId = 'config-2';

export interface ConfigDriveInput {
  /** A UUID, fresh per failover: cloudbase-init runs its per-instance plugins again when it changes. */
  uuid: string;
  hostname: string;
  nics: readonly NicPlan[];
}

export interface ConfigDriveResult {
  path: string;
  /** What the config drive could not carry for this plan (for the drill report). */
  notes: string[];
}

/** Writes `cidata.iso` in dir. */
export async function writeNoCloudSeed(dir: string, files: NoCloudFiles): Promise<string> {
  return buildIso(dir, 'cidata.iso', NoCloudVolumeId, async (root) => {
    for (const name of ['meta-data', 'user-data', 'network-config'] as const) await writeFile(join(root, name), files[name]);
  });
}

/** Writes `config-2.iso` in dir. */
export async function writeConfigDrive(dir: string, input: ConfigDriveInput): Promise<ConfigDriveResult> {
  const { metaData, networkData, notes } = renderConfigDrive(input);
  const path = await buildIso(dir, 'config-2.iso', ConfigDriveVolumeId, async (root) => {
    const latest = join(root, 'openstack', 'latest');
    await mkdir(latest, { recursive: true });
    await writeFile(join(latest, 'meta_data.json'), `${JSON.stringify(metaData, null, 2)}\n`);
    await writeFile(join(latest, 'network_data.json'), `${JSON.stringify(networkData, null, 2)}\n`);
  });
  return { path, notes };
}

/**
 * The two JSON documents of the config drive. cloudbase-init (1.1.0 and later) applies each `ipv4` or
 * `ipv6` network by first deleting every address of that family on the adapter, so a second network
 * of one family on one link would replace the first: one network per family and link is written and
 * the rest named in `notes`. Networks of type ipv4_dhcp are skipped by cloudbase-init (the adapter
 * keeps whatever it had); search domains have no place in network_data.json.
 */
export function renderConfigDrive(input: ConfigDriveInput): { metaData: Record<string, unknown>; networkData: Record<string, unknown>; notes: string[] } {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(input.uuid)) throw ErrInvalidArgument(`uuid: ${JSON.stringify(String(input.uuid).slice(0, 60))} is not a lower-case UUID`);
  const badHost = hostNameReason(input.hostname);
  if (badHost) throw ErrInvalidArgument(`hostname: ${badHost}`);

  const notes: string[] = [];
  // cloudbase-init's netbios_host_name_compatibility (on by default) cuts the name to 15 characters.
  if (input.hostname.split('.')[0]!.length > 15) notes.push(`hostname ${input.hostname}: Windows (cloudbase-init by default) keeps only its first 15 characters, ${input.hostname.slice(0, 15)}`);
  const links: Record<string, unknown>[] = [];
  const networks: Record<string, unknown>[] = [];
  const allDns: string[] = [];
  for (const p of input.nics) {
    links.push({ id: p.name, type: 'phy', ethernet_mac_address: p.mac, mtu: p.config.mtu ?? null });
    const c = p.config;
    if (c.mode === 'dhcp') {
      networks.push({ id: `${p.name}-ipv4`, type: 'ipv4_dhcp', link: p.name, network_id: randomUUID() });
      if (c.dhcp6) networks.push({ id: `${p.name}-ipv6`, type: 'ipv6_dhcp', link: p.name, network_id: randomUUID() });
      notes.push(`nic ${p.mac}: DHCP: cloudbase-init leaves the adapter as it is; a Windows NIC that was static on the primary keeps its old address`);
      continue;
    }
    for (const family of [4, 6] as const) {
      const cidrs = c.addresses.map((a) => parseInterfaceCidr(a)).flatMap((r) => (r.ok && r.value.family === family ? [r.value] : []));
      const first = cidrs[0];
      if (!first) continue;
      if (cidrs.length > 1) notes.push(`nic ${p.mac}: only ${first.text} of its IPv${family} addresses reaches a Windows guest through cloudbase-init (left out: ${cidrs.slice(1).map((x) => x.text).join(', ')})`);
      const gateway = family === 4 ? c.gateway4 : c.gateway6;
      const dns = c.dns.filter((d) => d.includes(':') === (family === 6));
      networks.push({
        id: `${p.name}-ipv${family}`,
        type: family === 4 ? 'ipv4' : 'ipv6',
        link: p.name,
        ip_address: first.address,
        netmask: netmaskOf(family, first.prefix),
        routes: gateway ? [{ network: family === 4 ? '0.0.0.0' : '::', netmask: family === 4 ? '0.0.0.0' : '::', gateway }] : [],
        services: dns.map((address) => ({ type: 'dns', address })),
        network_id: randomUUID(),
      });
    }
    for (const d of c.dns) if (!allDns.includes(d)) allDns.push(d);
    if (c.search.length > 0) notes.push(`nic ${p.mac}: search domains (${c.search.join(', ')}) are not carried by network_data.json`);
  }
  const metaData = { uuid: input.uuid, hostname: input.hostname, name: input.hostname, launch_index: 0, availability_zone: 'lifeboat', meta: {} };
  const networkData = { links, networks, services: allDns.map((address) => ({ type: 'dns', address })) };
  return { metaData, networkData, notes };
}

/** Builds an ISO of a staged tree under a temporary name, then renames it into place. */
async function buildIso(dir: string, fileName: string, volumeId: string, stage: (root: string) => Promise<void>): Promise<string> {
  const tool = await isoTool();
  const staging = await mkdtemp(join(dir, `.${fileName}-`));
  const root = join(staging, 'root');
  const partial = join(staging, fileName);
  const target = join(dir, fileName);
  try {
    await mkdir(root);
    await stage(root);
    const args = ['-quiet', '-output', partial, '-volid', volumeId, '-joliet', '-rock', root];
    try {
      if (tool === 'genisoimage') await execFileP('genisoimage', args, { maxBuffer: 1 << 20 });
      else await execFileP('xorriso', ['-as', 'mkisofs', ...args], { maxBuffer: 1 << 20 });
    } catch (err) {
      const stderr = String((err as { stderr?: unknown }).stderr ?? '').trim().split('\n').slice(-3).join(' ');
      throw new LifeboatError('io', `write ${fileName} with ${tool}: ${stderr || (err as Error).message}`, { cause: err });
    }
    await rename(partial, target);
    return target;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

let chosenTool: Promise<'genisoimage' | 'xorriso'> | undefined;

/** genisoimage when installed, else xorriso in its mkisofs mode. */
export function isoTool(): Promise<'genisoimage' | 'xorriso'> {
  chosenTool ??= (async () => {
    for (const tool of ['genisoimage', 'xorriso'] as const) {
      try {
        await execFileP(tool, ['-version']);
        return tool;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return tool;
      }
    }
    chosenTool = undefined;
    throw new LifeboatError('unavailable', 'neither genisoimage nor xorriso is installed: install one (Debian: apt-get install genisoimage)');
  })();
  return chosenTool;
}
