/**
 * protect --source hyperv: the VM on a Hyper-V host, reached by PowerShell over OpenSSH
 * (shared/hyperv/runner.ts): its disks by controller slot, its generation, vCPUs, memory and NICs
 * (with the guest's addresses from KVP data exchange) read to show what the engine will report (it
 * reads them again every cycle). Every disk must be a VHDX or VHD the agent can open through the path
 * map (`--path-map 'D:\VMs=/mnt/hv01/VMs'`), or as the host names it when the agent runs there.
 */
import { userInfo } from 'node:os';
import { resolve } from 'node:path';
import { openDisk } from '../../shared/disk/index.js';
import { ErrInvalidArgument, LifeboatError, userMessage } from '../../shared/errors.js';
import { checkWindowsPath } from '../../shared/hyperv/ps.js';
import { SshHypervRunner } from '../../shared/hyperv/runner.js';
import { formatBytes } from '../../shared/units.js';
import type { HypervRunnerFactory } from '../replicate/live.js';
import { describeVm, localPath, machineOf, sshRunner, type HypervSource } from '../sources/hyperv-view.js';
import type { MachineConfig } from '../sources/live-view.js';
import type { DiskConfig, VmConfig } from '../state/schema.js';

export interface HypervProtectOptions {
  vmName?: string;
  host?: string;
  sshUser?: string;
  sshKey?: string;
  sshPort?: string;
  knownHosts?: string;
  pathMap?: string[];
}

export interface HypervProtected extends MachineConfig {
  source: HypervSource;
  disks: DiskConfig[];
  describe: string[];
}

/** The source's settings from the options (kept from the protected VM where not given). */
export function hypervSource(opts: HypervProtectOptions, existing: VmConfig | undefined): HypervSource {
  const old = existing?.source?.kind === 'hyperv' ? existing.source : undefined;
  const vmName = opts.vmName ?? old?.vmName;
  const host = opts.host ?? old?.host;
  if (!vmName) throw ErrInvalidArgument('--source hyperv needs --vm-name NAME (the VM\'s name on the Hyper-V host)');
  if (!host) throw ErrInvalidArgument('--source hyperv needs --host HOST (the Hyper-V host, reached by OpenSSH)');
  if (vmName.length > 100) throw ErrInvalidArgument('--vm-name: longer than Hyper-V\'s 100 characters');
  const port = opts.sshPort === undefined ? old?.port : Number(opts.sshPort);
  if (port !== undefined && !(Number.isInteger(port) && port > 0 && port < 65536)) throw ErrInvalidArgument(`--ssh-port ${JSON.stringify(opts.sshPort)} must be a port number`);
  const paths = opts.pathMap === undefined ? old?.paths ?? [] : opts.pathMap.map(parsePathMap);
  const source: HypervSource = {
    kind: 'hyperv', vmName, host, user: opts.sshUser ?? old?.user ?? userInfo().username,
    ...(port !== undefined ? { port } : {}),
    ...(opts.sshKey ? { identityFile: resolve(opts.sshKey) } : old?.identityFile ? { identityFile: old.identityFile } : {}),
    ...(opts.knownHosts ? { knownHostsFile: resolve(opts.knownHosts) } : old?.knownHostsFile ? { knownHostsFile: old.knownHostsFile } : {}),
    paths,
  };
  // The runner checks host, user and port now, before anything is written.
  new SshHypervRunner({ host: source.host, user: source.user, ...(source.port !== undefined ? { port: source.port } : {}) });
  return source;
}

function parsePathMap(text: string): { windows: string; local: string } {
  const eq = text.indexOf('=');
  if (eq < 0) throw ErrInvalidArgument(`--path-map ${JSON.stringify(text.slice(0, 80))}: give WINDOWS_DIR=LOCAL_DIR, e.g. 'D:\\VMs=/mnt/hv01/VMs'`);
  const windows = checkWindowsPath(text.slice(0, eq).replace(/\\*$/, '\\'), '--path-map');
  return { windows: windows.replace(/\\+$/, ''), local: resolve(text.slice(eq + 1)) };
}

/** Describes the VM on its host, takes its disks (every one, in controller order) and checks each opens here. */
export async function protectHyperv(vm: string, opts: HypervProtectOptions, existing: VmConfig | undefined, runners: HypervRunnerFactory = sshRunner): Promise<HypervProtected> {
  const source = hypervSource(opts, existing);
  const d = await describeVm(runners(source), vm, source.vmName);
  if (d.disks.length === 0) throw ErrInvalidArgument(`VM ${vm}: ${source.vmName} on ${source.host} has no virtual hard disk`);
  const disks: DiskConfig[] = [...(existing?.disks ?? [])];
  let next = Math.max(-1, ...disks.map((x) => Number(x.id.slice(4)))) + 1;
  for (const b of d.disks) if (!disks.some((x) => x.node === b.slot)) disks.push({ id: `disk${next++}`, path: b.path, node: b.slot });
  const missing = disks.filter((x) => !d.disks.some((b) => b.slot === x.node));
  if (missing.length > 0) throw ErrInvalidArgument(`VM ${vm}: ${missing.map((x) => `${x.id} (${x.node ?? x.path})`).join(', ')} no longer attached; a disk cannot be removed (unprotect and protect again)`);
  const describe: string[] = [];
  for (const x of disks) {
    const file = d.disks.find((b) => b.slot === x.node)!.path;
    const path = localPath(source, file);
    try {
      const image = await openDisk(path, { readOnly: true });
      describe.push(`${x.id} ${x.node} ${file} (${image.format}, ${formatBytes(image.virtualSize)})`);
      await image.close();
    } catch (err) {
      throw new LifeboatError('invalid_argument', `VM ${vm}: ${x.id} (${x.node}): cannot open ${path} here: ${userMessage(err) ?? String(err)}${source.paths.length === 0 ? ' (give --path-map WINDOWS_DIR=LOCAL_DIR when the agent reads the host\'s files through a share)' : ''}`, { cause: err });
    }
  }
  return { source, disks, describe, ...machineOf(d) };
}
