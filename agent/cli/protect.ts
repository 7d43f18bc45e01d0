/**
 * lifeboat-agent protect VM --disk PATH… | --source qemu --qmp SOCKET | --source hyperv --vm-name NAME --host HOST |
 * --source libvirt --domain NAME: starts protecting a VM, or changes its settings and adds
 * disks when it is already protected (a disk added later replicates without re-protecting). Writes
 * only the VM's config; the engine (run) registers it with the service and ships the initial copy.
 * The VM's hardware and NICs at the source (--firmware … --nic) go with its registration, for the
 * VM a failover starts (hardware-options.ts); every option is checked before anything is written.
 */
import { constants } from 'node:fs';
import { access, realpath, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { openDisk } from '../../shared/disk/index.js';
import { printJson } from '../../shared/cli/run.js';
import { ErrInvalidArgument, wrap } from '../../shared/errors.js';
import { formatBytes, parseSize } from '../../shared/units.js';
import { libvirtWorkDir, qemuWorkDir } from '../replicate/live.js';
import { Frequencies, StateVersion } from '../state/schema.js';
import type { DiskConfig, HardwareConfig, NicConfig, VmConfig } from '../state/schema.js';
import { checkVmName } from '../state/store.js';
import {
  agentState, parseAppConsistentEvery, parseBandwidth, parseCompression, parseFrequency, parseHistory, parseInitial,
  parseStartAt, withStateDir,
} from './agent-options.js';
import type { StateDirOption } from './agent-options.js';
import type { HardwareOptions } from './hardware-options.js';
import { mergeHardware, parseNics } from './hardware-options.js';
import { protectHyperv } from './protect-hyperv.js';
import { protectLibvirt } from './protect-libvirt.js';
import { protectQemu } from './protect-qemu.js';

interface ProtectOptions extends StateDirOption, HardwareOptions {
  disk?: string[];
  source?: string;
  qmp?: string;
  guestAgent?: string;
  granularity?: string;
  vmName?: string;
  host?: string;
  sshUser?: string;
  sshKey?: string;
  sshPort?: string;
  knownHosts?: string;
  pathMap?: string[];
  domain?: string;
  connect?: string;
  workDir?: string;
  frequency?: string;
  history?: string;
  appConsistentEvery?: string;
  preSnapshot?: string;
  postSnapshot?: string;
  shutdownHook?: string;
  startHook?: string;
  compression?: string;
  initial?: string;
  startAt?: string;
  bandwidth?: string;
  json?: boolean;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

export function registerProtect(program: Command): void {
  withStateDir(program
    .command('protect')
    .description('protect a VM: replicate its disks to the hoster every cycle (again on a protected VM: change settings, add disks)')
    .argument('<vm>', 'VM name: lower-case letters, digits, _ and -')
    .option('--source <kind>', 'where the disks are read: file (images at rest, the default), qemu (a running QEMU through --qmp), hyperv (a Hyper-V VM through --host) or libvirt (a libvirt domain through virsh)')
    .option('--disk <path>', 'a virtual disk of the VM (raw, vhd, vhdx); repeat for several. With --source qemu: a drive id or node name; with --source libvirt: a target such as vda (default: every writable disk)', collect)
    .option('--qmp <socket>', 'with --source qemu: the VM\'s QMP socket, for the agent alone')
    .option('--guest-agent <socket>', 'with --source qemu: qemu-guest-agent\'s socket; points are then application-consistent (guest-fsfreeze)')
    .option('--granularity <size>', 'with --source qemu: dirty bitmap granularity, a power of two from 4K (default: qemu\'s, the qcow2 cluster size)')
    .option('--domain <name>', 'with --source libvirt: the libvirt domain')
    .option('--connect <uri>', 'with --source libvirt: the libvirt connection URI, e.g. qemu:///system (default: virsh\'s)')
    .option('--work-dir <dir>', 'with --source libvirt: where libvirt puts each cycle\'s scratch files and NBD socket; writable by the libvirt daemon (default: the VM\'s state directory)')
    .option('--vm-name <name>', 'with --source hyperv: the VM\'s name on the Hyper-V host')
    .option('--host <host>', 'with --source hyperv: the Hyper-V host, reached by OpenSSH (PowerShell runs there)')
    .option('--ssh-user <user>', 'with --source hyperv: the account on the host (a member of Hyper-V Administrators; default: this user\'s name)')
    .option('--ssh-key <file>', 'with --source hyperv: the private key for it')
    .option('--ssh-port <port>', 'with --source hyperv: the host\'s SSH port (default 22)')
    .option('--known-hosts <file>', 'with --source hyperv: known_hosts holding the host\'s key (checked strictly)')
    .option('--path-map <windows=local>', 'with --source hyperv: a directory of the host and where the agent reads it, e.g. \'D:\\VMs=/mnt/hv01/VMs\'; repeatable (default: the host\'s paths as they are, for an agent on the host)', collect)
    .option('--frequency <f>', 'replication frequency: 30s, 5m or 15m (default 5m; kept when not given again)')
    .option('--history <n>', 'hourly recovery points to keep besides the latest, 0-24 (default 0; kept when not given again)')
    .option('--app-consistent-every <hours>', 'application-consistent point every N hours, e.g. 4h (needs --pre-snapshot/--post-snapshot)')
    .option('--pre-snapshot <cmd>', 'shell command run before an application-consistent cycle (quiesce)')
    .option('--post-snapshot <cmd>', 'shell command run after it (thaw)')
    .option('--shutdown-hook <cmd>', 'shell command that shuts the VM down for a planned failover (kept when not given again)')
    .option('--start-hook <cmd>', 'shell command that starts the VM here when it fails back (kept when not given again)')
    .option('--compression <c>', 'log compression: zstd, lz4 or none (default zstd; kept when not given again)')
    .option('--initial <how>', 'initial copy: network (default), media:DIR (write to a directory for shipping) or existing (the hoster has a copy)')
    .option('--start-at <time>', 'start the initial copy at HH:MM or an ISO time')
    .option('--bandwidth <rate>', 'limit the VM\'s uploads, all disks together, e.g. 20M or 20MB/s (bytes/s) or 100mbit')
    // The VM's hardware and NICs at the source, reported to the service for the VM a failover starts.
    .option('--firmware <bios|uefi>', 'the VM\'s firmware: bios or uefi (reported for failover; each of these is kept when not given again)')
    .option('--secure-boot', 'the VM boots with UEFI Secure Boot (needs --firmware uefi)')
    .option('--no-secure-boot', 'the VM boots without Secure Boot')
    .option('--cpus <n>', 'the VM\'s vCPUs, 1-240')
    .option('--memory <size>', 'the VM\'s memory with its unit, e.g. 4G or 512M (whole MiB, 64M to 4T)')
    .option('--guest-os <os>', 'the guest\'s operating system: linux, windows or other')
    .option('--disk-bus <bus>', 'the bus of every disk: virtio, scsi, sata or ide (boot order: the disks\' order)')
    .option('--nic <mac[,model=M][,ip=A/P]>', 'a NIC of the VM: its MAC, model (virtio, e1000, rtl8139) and the addresses it has here, ip= repeatable; repeat --nic for several (given, the list replaces the VM\'s NICs)', collect)
    .option('--json', 'print the VM\'s config as JSON'))
    .action(async (vm: string, opts: ProtectOptions) => {
      const state = agentState(opts);
      const existing = await state.findConfig(checkVmName(vm));
      const kind = opts.source ?? existing?.source?.kind ?? 'file';
      if (kind !== 'file' && kind !== 'qemu' && kind !== 'hyperv' && kind !== 'libvirt') throw ErrInvalidArgument(`--source "${kind.slice(0, 40)}" must be file, qemu, hyperv or libvirt`);
      if (existing && kind !== (existing.source?.kind ?? 'file')) throw ErrInvalidArgument(`${vm} is protected with --source ${existing.source?.kind ?? 'file'}; unprotect it to change the source`);
      if (kind !== 'qemu' && (opts.qmp || opts.guestAgent || opts.granularity)) throw ErrInvalidArgument('--qmp, --guest-agent and --granularity need --source qemu');
      if (kind !== 'hyperv' && (opts.vmName || opts.host || opts.sshUser || opts.sshKey || opts.sshPort || opts.knownHosts || opts.pathMap)) throw ErrInvalidArgument('--vm-name, --host, --ssh-user, --ssh-key, --ssh-port, --known-hosts and --path-map need --source hyperv');
      if (kind !== 'libvirt' && (opts.domain || opts.connect || opts.workDir)) throw ErrInvalidArgument('--domain, --connect and --work-dir need --source libvirt');
      let config: VmConfig;
      let described: string[];
      let machine: { hardware: HardwareConfig; nics: NicConfig[] } | undefined;
      if (kind === 'qemu') {
        await state.init();
        const granularity = opts.granularity === undefined ? undefined : parseGranularity(opts.granularity);
        const q = await protectQemu(vm, { qmp: opts.qmp, guestAgent: opts.guestAgent, disk: opts.disk, granularity }, existing, qemuWorkDir(state, vm));
        // What qemu says of the machine is read again every cycle (progress.json); config keeps what the options say.
        config = await buildConfig(checkVmName(vm), opts, existing, q.disks);
        config.source = q.source;
        described = q.describe;
        machine = { hardware: q.hardware, nics: q.nics };
      } else if (kind === 'hyperv') {
        if (opts.disk) throw ErrInvalidArgument('--source hyperv takes every virtual hard disk of the VM; give no --disk');
        const h = await protectHyperv(vm, opts, existing);
        config = await buildConfig(checkVmName(vm), opts, existing, h.disks);
        config.source = h.source;
        described = h.describe;
        machine = { hardware: h.hardware, nics: h.nics };
      } else if (kind === 'libvirt') {
        await state.init();
        const l = await protectLibvirt(vm, { domain: opts.domain, connect: opts.connect, workDir: opts.workDir, disk: opts.disk }, existing, libvirtWorkDir(state, vm));
        // What libvirt says of the machine is read again every cycle (progress.json); config keeps what the options say.
        config = await buildConfig(checkVmName(vm), opts, existing, l.disks);
        config.source = l.source;
        described = l.describe;
        machine = { hardware: l.hardware, nics: l.nics };
      } else {
        // On a protected VM, no --disk keeps its disks: protect VM --bandwidth 10M changes that alone.
        const given = opts.disk && opts.disk.length > 0 ? opts.disk : existing?.disks.map((d) => d.path);
        if (!given) throw ErrInvalidArgument('protect needs --disk PATH (or --source qemu --qmp SOCKET, --source hyperv --vm-name NAME --host HOST, --source libvirt --domain NAME)');
        config = await buildConfig(checkVmName(vm), opts, existing, await fileDisks(given, existing));
        const sizes = await Promise.all(config.disks.map((d) => probeDisk(d.path)));
        described = config.disks.map((d, i) => `${d.id} ${d.path} (${sizes[i]!.format}, ${formatBytes(sizes[i]!.virtualSize)})`);
      }
      await refuseSharedDisks(config, await Promise.all((await state.listVms()).filter((v) => v !== vm).map((v) => state.readConfig(v))));
      if (config.initial.mode === 'media') await checkMediaDir(config.initial.dir);
      await state.init();
      await state.writeConfig(config);
      if (opts.json) return printJson(machine ? { ...config, machine } : config);
      const disks = described.join(', ');
      const seen = machine ? `; ${({ hyperv: 'Hyper-V', libvirt: 'libvirt', qemu: 'qemu' } as Record<string, string>)[kind]} says: ${describeMachine({ ...config, hardware: machine.hardware, nics: machine.nics }).slice(2)}` : '';
      const when = (await state.hasIdentity()) ? 'Replication starts with the next \'lifeboat-agent run\'.'
        : 'This agent is not enrolled yet: replication starts once it is (lifeboat-agent enroll TOKEN) and runs.';
      process.stdout.write(`protected ${vm}: ${disks}; every ${Object.entries(Frequencies).find(([, ms]) => ms === config.frequencyMs)?.[0]}; initial copy: ${config.initial.mode}${describeMachine(config)}${seen}. ${when}\n`);
    });
}

/** The file source's disks: every disk protected before, then the new paths (real paths: a symlink is its file). */
async function fileDisks(given: string[], existing: VmConfig | undefined): Promise<DiskConfig[]> {
  const paths = await Promise.all(given.map((p) => realpath(resolve(p)).catch(() => resolve(p))));
  if (new Set(paths).size !== paths.length) throw ErrInvalidArgument('the same --disk is given twice');
  await refuseSameFile(paths);
  const disks: DiskConfig[] = [];
  if (existing) {
    // Keep every disk and its id; protocol v1 cannot remove a disk from a protected VM.
    const real = await Promise.all(existing.disks.map((d) => realpath(d.path).catch(() => d.path)));
    const missing = existing.disks.filter((d, i) => !paths.includes(d.path) && !paths.includes(real[i]!));
    if (missing.length > 0) throw ErrInvalidArgument(`${existing.name} already protects ${missing.map((d) => d.path).join(', ')}; a disk cannot be removed (unprotect and protect again)`);
    disks.push(...existing.disks);
  }
  let next = Math.max(-1, ...disks.map((d) => Number(d.id.slice(4)))) + 1;
  const known = new Set([...disks.map((d) => d.path), ...(await Promise.all(disks.map((d) => realpath(d.path).catch(() => d.path))))]);
  for (const path of paths) if (!known.has(path)) disks.push({ id: `disk${next++}`, path });
  return disks;
}

/** --granularity: a power of two from 4 KiB to 64 MiB. */
function parseGranularity(text: string): number {
  const n = parseSize(text, '--granularity');
  if (n < 4096 || n > 64 << 20 || (n & (n - 1)) !== 0) throw ErrInvalidArgument(`--granularity "${text}" must be a power of two from 4K to 64M`);
  return n;
}

async function buildConfig(name: string, opts: ProtectOptions, existing: VmConfig | undefined, disks: DiskConfig[]): Promise<VmConfig> {
  // A setting not given again keeps its value: protect on a protected VM changes only what it names.
  const appEvery = opts.appConsistentEvery === undefined ? existing?.appConsistentEveryMs ?? null : parseAppConsistentEvery(opts.appConsistentEvery);
  const preSnapshot = opts.preSnapshot ?? existing?.preSnapshot ?? null;
  const postSnapshot = opts.postSnapshot ?? existing?.postSnapshot ?? null;
  const guestAgent = opts.guestAgent ?? (existing?.source?.kind === 'qemu' ? existing.source.guestAgent : null);
  // A hyperv source's checkpoints are production ones: the guest's VSS writers quiesce it.
  // A libvirt domain's guest agent freezes it when its channel is there (domfsfreeze).
  const quiesces = guestAgent !== null || ['hyperv', 'libvirt'].includes(opts.source ?? existing?.source?.kind ?? 'file');
  if (appEvery !== null && !preSnapshot && !postSnapshot && !quiesces) throw ErrInvalidArgument('--app-consistent-every needs --pre-snapshot and/or --post-snapshot (or --guest-agent with --source qemu, or --source hyperv or libvirt)');
  const hardware = mergeHardware(opts, existing?.hardware);
  const nics = opts.nic === undefined ? existing?.nics : parseNics(opts.nic);
  return {
    version: StateVersion,
    name,
    disks,
    frequencyMs: opts.frequency === undefined ? existing?.frequencyMs ?? parseFrequency('5m') : parseFrequency(opts.frequency),
    history: opts.history === undefined ? existing?.history ?? 0 : parseHistory(opts.history),
    appConsistentEveryMs: appEvery,
    preSnapshot,
    postSnapshot,
    shutdownHook: opts.shutdownHook ?? existing?.shutdownHook ?? null,
    startHook: opts.startHook ?? existing?.startHook ?? null,
    compression: opts.compression === undefined ? existing?.compression ?? 'zstd' : parseCompression(opts.compression),
    initial: existing?.initial ?? withAbsoluteDir(parseInitial(opts.initial ?? 'network')),
    startAt: opts.startAt === undefined ? existing?.startAt ?? null : parseStartAt(opts.startAt),
    bandwidthBytesPerSec: opts.bandwidth === undefined ? existing?.bandwidthBytesPerSec ?? null : parseBandwidth(opts.bandwidth),
    paused: existing?.paused ?? false,
    createdAt: existing?.createdAt ?? new Date().toISOString(),
    ...(hardware === undefined ? {} : { hardware }),
    ...(nics === undefined ? {} : { nics }),
  };
}

/** `; uefi+secure-boot, 2 vCPUs, 4096 MiB, linux, virtio disks; NICs 52:54:00:…` for what was given. */
function describeMachine(config: VmConfig): string {
  const h = config.hardware ?? {};
  const machine = [
    h.firmware === undefined ? '' : `${h.firmware}${h.secureBoot ? '+secure-boot' : ''}`,
    h.cpus === undefined ? '' : `${h.cpus} vCPU${h.cpus === 1 ? '' : 's'}`,
    h.memoryMiB === undefined ? '' : `${h.memoryMiB} MiB`,
    h.guestOs ?? '',
    h.diskBus === undefined ? '' : `${h.diskBus} disks`,
  ].filter(Boolean).join(', ');
  const nics = config.nics === undefined ? '' : `NICs ${config.nics.map((n) => `${n.mac}${n.addresses.length ? ` (${n.addresses.join(' ')})` : ''}`).join(', ') || 'none'}`;
  return [machine, nics].filter(Boolean).map((part) => `; ${part}`).join('');
}

/** Two --disk paths naming one file (hard links, bind mounts) are one disk. */
async function refuseSameFile(paths: string[]): Promise<void> {
  const ids = await Promise.all(paths.map((p) => stat(p).then((s) => `${s.dev}:${s.ino}`, () => p)));
  const dup = ids.findIndex((id, i) => ids.indexOf(id) !== i);
  if (dup >= 0) throw ErrInvalidArgument(`--disk ${paths[dup]} and ${paths[ids.indexOf(ids[dup]!)]} are the same file`);
}

/** A disk belongs to one protected VM: two would replicate it twice and fail over twice. */
async function refuseSharedDisks(config: VmConfig, others: VmConfig[]): Promise<void> {
  const id = async (p: string) => stat(p).then((s) => `${s.dev}:${s.ino}`, () => p);
  const mine = new Map<string, string>();
  for (const d of config.disks) mine.set(await id(d.path), d.path);
  for (const o of others) {
    for (const d of o.disks) {
      const hit = mine.get(await id(d.path));
      if (hit !== undefined) throw ErrInvalidArgument(`${hit} is already protected as ${d.id} of VM ${o.name}`);
    }
  }
}

function withAbsoluteDir(mode: VmConfig['initial']): VmConfig['initial'] {
  return mode.mode === 'media' ? { mode: 'media', dir: resolve(mode.dir) } : mode;
}

/** Opens the disk to prove it exists, is readable and is a format we know. */
async function probeDisk(path: string): Promise<{ format: string; virtualSize: number }> {
  const disk = await openDisk(path, { readOnly: true });
  try {
    return { format: disk.format, virtualSize: disk.virtualSize };
  } finally {
    await disk.close();
  }
}

async function checkMediaDir(dir: string): Promise<void> {
  try {
    if (!(await stat(dir)).isDirectory()) throw ErrInvalidArgument(`--initial media:${dir}: not a directory`);
    await access(dir, constants.W_OK);
  } catch (err) {
    throw wrap(`--initial media:${dir}`, err);
  }
}
