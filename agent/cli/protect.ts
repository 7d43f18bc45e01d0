/**
 * lifeboat-agent protect VM --disk PATH…: starts protecting a VM, or changes its settings and adds
 * disks when it is already protected (a disk added later replicates without re-protecting). Writes
 * only the VM's config; the engine (run) registers it with the service and ships the initial copy.
 */
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { openDisk } from '../../shared/disk/index.js';
import { ErrInvalidArgument, wrap } from '../../shared/errors.js';
import { formatBytes } from '../../shared/units.js';
import { StateVersion } from '../state/schema.js';
import type { DiskConfig, VmConfig } from '../state/schema.js';
import { checkVmName } from '../state/store.js';
import {
  agentState, parseAppConsistentEvery, parseBandwidth, parseCompression, parseFrequency, parseHistory, parseInitial,
  parseStartAt, withStateDir,
} from './agent-options.js';
import type { StateDirOption } from './agent-options.js';

interface ProtectOptions extends StateDirOption {
  disk: string[];
  frequency: string;
  history: string;
  appConsistentEvery?: string;
  preSnapshot?: string;
  postSnapshot?: string;
  shutdownHook?: string;
  compression: string;
  initial: string;
  startAt?: string;
  bandwidth?: string;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

export function registerProtect(program: Command): void {
  withStateDir(program
    .command('protect')
    .description('protect a VM: replicate its disks to the hoster every cycle (again on a protected VM: change settings, add disks)')
    .argument('<vm>', 'VM name: lower-case letters, digits, _ and -')
    .requiredOption('--disk <path>', 'a virtual disk of the VM (raw, vhd, vhdx); repeat for several', collect)
    .option('--frequency <f>', 'replication frequency: 30s, 5m or 15m', '5m')
    .option('--history <n>', 'hourly recovery points to keep besides the latest (0-24)', '0')
    .option('--app-consistent-every <hours>', 'application-consistent point every N hours, e.g. 4h (needs --pre-snapshot/--post-snapshot)')
    .option('--pre-snapshot <cmd>', 'shell command run before an application-consistent cycle (quiesce)')
    .option('--post-snapshot <cmd>', 'shell command run after it (thaw)')
    .option('--shutdown-hook <cmd>', 'shell command that shuts the VM down for a planned failover (kept when not given again)')
    .option('--compression <c>', 'log compression: zstd, lz4 or none', 'zstd')
    .option('--initial <how>', 'initial copy: network, media:DIR (write to a directory for shipping) or existing (the hoster has a copy)', 'network')
    .option('--start-at <time>', 'start the initial copy at HH:MM or an ISO time')
    .option('--bandwidth <rate>', 'limit the VM\'s uploads, all disks together, e.g. 20M or 20MB/s (bytes/s) or 100mbit'))
    .action(async (vm: string, opts: ProtectOptions) => {
      const state = agentState(opts);
      const config = await buildConfig(checkVmName(vm), opts, await state.findConfig(vm));
      const sizes = await Promise.all(config.disks.map((d) => probeDisk(d.path)));
      if (config.initial.mode === 'media') await checkMediaDir(config.initial.dir);
      await state.init();
      await state.writeConfig(config);
      const disks = config.disks.map((d, i) => `${d.id} ${d.path} (${sizes[i]!.format}, ${formatBytes(sizes[i]!.virtualSize)})`).join(', ');
      process.stdout.write(`protected ${vm}: ${disks}; every ${opts.frequency}; initial copy: ${opts.initial}. Replication starts with the next 'lifeboat-agent run'.\n`);
    });
}

async function buildConfig(name: string, opts: ProtectOptions, existing: VmConfig | undefined): Promise<VmConfig> {
  const paths = opts.disk.map((p) => resolve(p));
  if (new Set(paths).size !== paths.length) throw ErrInvalidArgument('the same --disk is given twice');
  const appEvery = opts.appConsistentEvery === undefined ? null : parseAppConsistentEvery(opts.appConsistentEvery);
  if (appEvery !== null && !opts.preSnapshot && !opts.postSnapshot) throw ErrInvalidArgument('--app-consistent-every needs --pre-snapshot and/or --post-snapshot');
  const disks: DiskConfig[] = [];
  if (existing) {
    // Keep every disk and its id; protocol v1 cannot remove a disk from a protected VM.
    const missing = existing.disks.filter((d) => !paths.includes(d.path));
    if (missing.length > 0) throw ErrInvalidArgument(`${name} already protects ${missing.map((d) => d.path).join(', ')}; a disk cannot be removed (unprotect and protect again)`);
    disks.push(...existing.disks);
  }
  let next = Math.max(-1, ...disks.map((d) => Number(d.id.slice(4)))) + 1;
  for (const path of paths) if (!disks.some((d) => d.path === path)) disks.push({ id: `disk${next++}`, path });
  return {
    version: StateVersion,
    name,
    disks,
    frequencyMs: parseFrequency(opts.frequency),
    history: parseHistory(opts.history),
    appConsistentEveryMs: appEvery,
    preSnapshot: opts.preSnapshot ?? null,
    postSnapshot: opts.postSnapshot ?? null,
    shutdownHook: opts.shutdownHook ?? existing?.shutdownHook ?? null,
    compression: parseCompression(opts.compression),
    initial: existing?.initial ?? withAbsoluteDir(parseInitial(opts.initial)),
    startAt: opts.startAt === undefined ? existing?.startAt ?? null : parseStartAt(opts.startAt),
    bandwidthBytesPerSec: opts.bandwidth === undefined ? null : parseBandwidth(opts.bandwidth),
    paused: existing?.paused ?? false,
    createdAt: existing?.createdAt ?? new Date().toISOString(),
  };
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
