/**
 * A Hyper-V VM's point in time through the hyperv source, as the engine uses it for one cycle
 * (docs/agent.md "The hyperv source"): a production checkpoint on the host, each disk's frozen file
 * opened with our own disk reader (shared/disk: VHDX or VHD, through the host's share) beside the
 * ranges resilient change tracking reports changed since the VM's reference point.
 *
 * Reference points (vms/<vm>/hyperv.json, written atomically): `referencePoint` is what changes are
 * counted from; it advances only when every disk's log of the cycle was acknowledged (the checkpoint
 * is converted into the new reference point and the old one destroyed), or when there was none yet
 * (the first base reads the checkpoint; what the bases miss the next log carries). Otherwise the
 * checkpoint is destroyed and the next cycle counts from the old reference point again (changes may
 * ship twice, never lost). `checkpoint` names a checkpoint made and not yet settled, and `release` the
 * reference points still to destroy, so what a killed agent left is cleaned at the next cycle.
 *
 * Input: the VM's name, the source's settings, its disks' ids and slots, a runner. Output: a LiveView.
 * Failure: the host refusing a step is LifeboatError('unavailable') `VM V: hyperv host H: STEP: <the
 * host's message>`; a disk whose slot is gone, or whose file the agent cannot map or open, is one line.
 */
import { join } from 'node:path';
import { z } from 'zod';
import { openDisk, type DiskImage, type Extent } from '../../shared/disk/index.js';
import { ErrInvalidArgument, LifeboatError, userMessage } from '../../shared/errors.js';
import { SshHypervRunner, type HypervRunner } from '../../shared/hyperv/runner.js';
import { parseMacAddress, parseSourceAddress } from '../../shared/protocol/vm-config.js';
import { readJsonFile, writeJsonAtomic } from '../state/atomic.js';
import type { SourceConfig } from '../state/schema.js';
import type { TrackedCycle } from '../tracker/types.js';
import { checkpointScript, convertScript, describeScript, releaseScript, stopScript } from './hyperv-scripts.js';
import type { LiveView, LiveDiskView, MachineConfig } from './live-view.js';

export type HypervSource = SourceConfig & { kind: 'hyperv' };

/** The production runner: OpenSSH to the host's OpenSSH server. */
export function sshRunner(source: HypervSource): HypervRunner {
  return new SshHypervRunner({
    host: source.host, user: source.user,
    ...(source.port ? { port: source.port } : {}),
    ...(source.identityFile ? { identityFile: source.identityFile } : {}),
    ...(source.knownHostsFile ? { knownHostsFile: source.knownHostsFile } : {}),
  });
}

/** Runs one step; a failed script is one line naming the VM, the host and the step. */
export async function runStep<T>(runner: HypervRunner, vm: string, step: string, script: string, answer: z.ZodType<T>): Promise<T> {
  let r;
  try {
    r = await runner.run(script);
  } catch (err) {
    // The host did not answer (ssh could not connect, a timeout): one line naming the VM and the host.
    throw new LifeboatError('unavailable', `VM ${vm}: ${userMessage(err) ?? String(err)}`, { cause: err });
  }
  const last = r.stdout.trim().split(/\r?\n/).pop() ?? '';
  if (r.exitCode !== 0) {
    const why = r.stderr.trim().split(/\r?\n/).pop() || `exit ${r.exitCode}`;
    throw new LifeboatError('unavailable', `VM ${vm}: hyperv host ${runner.host}: ${step}: ${why}`);
  }
  let parsed: unknown;
  try { parsed = JSON.parse(last); } catch { parsed = undefined; }
  const ok = answer.safeParse(parsed);
  if (!ok.success) throw new LifeboatError('unavailable', `VM ${vm}: hyperv host ${runner.host}: ${step}: an answer that is not what the step returns (${JSON.stringify(last.slice(0, 80))})`);
  return ok.data;
}

// ConvertTo-Json writes a one-element array as the element and an empty one as null.
const list = <T extends z.ZodType>(item: T) => z.preprocess((v) => (v === null || v === undefined ? [] : Array.isArray(v) ? v : [v]), z.array(item));

export const DescribeAnswer = z.object({
  generation: z.union([z.literal(1), z.literal(2)]),
  cpus: z.number().int().positive(),
  memoryBytes: z.number().int().positive(),
  secureBoot: z.boolean(),
  state: z.string(),
  version: z.string(),
  disks: list(z.object({ slot: z.string().min(1), path: z.string().min(1) })),
  nics: list(z.object({ mac: z.string(), addresses: list(z.string()) })),
});
export type DescribeAnswer = z.infer<typeof DescribeAnswer>;

const CheckpointAnswer = z.object({
  checkpoint: z.string().min(1),
  referencePointFound: z.boolean(),
  consistency: z.enum(['application', 'crash']),
  warning: z.string().nullable(),
  disks: list(z.object({
    slot: z.string(), file: z.string().min(1), size: z.number().int().nonnegative(), lost: z.boolean(),
    ranges: list(z.tuple([z.number().int().nonnegative(), z.number().int().nonnegative()])),
  })),
});

const StateFile = z.object({
  referencePoint: z.string().nullable(),
  checkpoint: z.string().nullable(),
  release: z.array(z.string()),
});
type StateFile = z.infer<typeof StateFile>;

/** The VM as Hyper-V describes it: generation as firmware, vCPUs, startup memory, the boot disk's bus, NICs with the guest's addresses (KVP). */
export function machineOf(d: DescribeAnswer): MachineConfig {
  const nics: MachineConfig['nics'] = [];
  for (const n of d.nics) {
    const mac = parseMacAddress(n.mac);
    if (!mac.ok) continue; // a dynamic MAC not assigned yet (all zeros)
    const addresses = n.addresses.filter((a) => parseSourceAddress(a).ok && !a.toLowerCase().startsWith('fe80')).map((a) => a.toLowerCase());
    nics.push({ mac: mac.mac, addresses });
  }
  // One bus stands for every disk (HardwareConfig): the boot disk's, the first in controller order.
  const bus = d.disks[0]?.slot.split(':')[0]?.toUpperCase();
  const diskBus = bus === 'SCSI' ? 'scsi' as const : bus === 'IDE' ? 'ide' as const : undefined;
  return {
    hardware: { firmware: d.generation === 2 ? 'uefi' : 'bios', secureBoot: d.secureBoot, cpus: d.cpus, memoryMiB: Math.floor(d.memoryBytes / (1 << 20)), ...(diskBus ? { diskBus } : {}) },
    nics,
  };
}

export async function describeVm(runner: HypervRunner, vm: string, vmName: string): Promise<DescribeAnswer> {
  return runStep(runner, vm, 'rct-describe', describeScript(vmName), DescribeAnswer);
}

/** Shuts the guest down for a planned failover; throws when it is not off within timeoutMs. */
export async function stopHypervVm(runner: HypervRunner, vm: string, vmName: string, timeoutMs: number): Promise<void> {
  const r = await runStep(runner, vm, 'rct-stop', stopScript(vmName, Math.ceil(timeoutMs / 1000)), z.object({ state: z.string() }));
  if (r.state !== 'Off') throw new LifeboatError('unavailable', `VM ${vm}: still ${r.state} ${Math.round(timeoutMs / 1000)} s after Stop-VM (are its integration services running?)`);
}

/** The local path of a file as the Hyper-V host names it, through the source's path map (none: as named). */
export function localPath(source: HypervSource, windowsPath: string): string {
  if (source.paths.length === 0) return windowsPath;
  const lower = windowsPath.toLowerCase();
  for (const p of source.paths) {
    const prefix = p.windows.replace(/\\+$/, '').toLowerCase();
    if (lower.startsWith(`${prefix}\\`)) {
      const parts = windowsPath.slice(prefix.length + 1).split('\\');
      if (parts.some((x) => x === '..' || x === '.' || x === '' || x.includes('/'))) break;
      return join(p.local, ...parts);
    }
  }
  throw ErrInvalidArgument(`hyperv: ${JSON.stringify(windowsPath)} is under none of the mapped directories (${source.paths.map((p) => p.windows).join(', ')})`);
}

/** The changed ranges of one disk since the reference point (TrackedCycle over the checkpoint's file). */
export class HypervCycle implements TrackedCycle {
  changedBytes = 0;
  settled: 'committed' | 'abandoned' | undefined;

  constructor(private readonly ranges: Array<[number, number]>, private readonly size: number, readonly bitmapLost: boolean) {}

  async *extents(): AsyncGenerator<Extent> {
    const sorted = this.ranges.map(([o, l]) => [o, Math.min(o + l, this.size)] as const).filter(([o, e]) => e > o).sort((a, b) => a[0] - b[0]);
    let cur: [number, number] | undefined;
    for (const [o, e] of sorted) {
      if (cur && o <= cur[1]) { cur[1] = Math.max(cur[1], e); continue; }
      if (cur) { this.changedBytes += cur[1] - cur[0]; yield { offset: cur[0], length: cur[1] - cur[0], kind: 'data' }; }
      cur = [o, e];
    }
    if (cur) { this.changedBytes += cur[1] - cur[0]; yield { offset: cur[0], length: cur[1] - cur[0], kind: 'data' }; }
  }

  async commit(): Promise<void> { this.settled ??= 'committed'; }
  async abandon(): Promise<void> { this.settled ??= 'abandoned'; }
}

export interface HypervVmViewOptions {
  vm: string;
  source: HypervSource;
  disks: Array<{ id: string; slot: string }>;
  /** vms/<vm>/hyperv.json */
  stateFile: string;
  runner: HypervRunner;
}

export class HypervVmView implements LiveView {
  readonly kind = 'hyperv';
  private closed = false;

  private constructor(
    private readonly o: HypervVmViewOptions,
    private state: StateFile,
    readonly disks: Map<string, LiveDiskView & { cycle: HypervCycle }>,
    readonly consistency: 'crash' | 'application',
    readonly capturedMs: number,
    readonly warnings: string[],
  ) {}

  static async readState(path: string): Promise<StateFile> {
    const raw = await readJsonFile(path).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    });
    if (raw === undefined) return { referencePoint: null, checkpoint: null, release: [] };
    const ok = StateFile.safeParse(raw);
    if (!ok.success) throw new LifeboatError('invalid_argument', `${path}: not a hyperv source state file (${ok.error.issues[0]?.message ?? 'invalid'})`);
    return ok.data;
  }

  static async open(o: HypervVmViewOptions): Promise<HypervVmView> {
    const { vm, source, runner } = o;
    let state = await HypervVmView.readState(o.stateFile);
    const warnings: string[] = [];
    // Reference points an earlier cycle replaced but could not destroy.
    for (const rp of state.release) {
      try {
        await runStep(runner, vm, 'rct-release', releaseScript(source.vmName, { referencePoint: rp }), z.object({ released: z.number() }));
        state = { ...state, release: state.release.filter((x) => x !== rp) };
        await writeJsonAtomic(o.stateFile, state);
      } catch (err) {
        warnings.push(`VM ${vm}: destroying reference point ${rp}: ${userMessage(err) ?? String(err)}`);
      }
    }
    const capturedMs = Date.now();
    const cp = await runStep(runner, vm, 'rct-checkpoint', checkpointScript(source.vmName, state.referencePoint, state.checkpoint), CheckpointAnswer);
    state = { ...state, checkpoint: cp.checkpoint };
    await writeJsonAtomic(o.stateFile, state);
    if (cp.warning) warnings.push(`VM ${vm}: no application-consistent checkpoint (${cp.warning}): this point is crash-consistent`);
    if (state.referencePoint && !cp.referencePointFound) warnings.push(`VM ${vm}: reference point ${state.referencePoint} is gone from the host: comparing every disk with its replica`);
    const disks = new Map<string, LiveDiskView & { cycle: HypervCycle }>();
    try {
      for (const d of o.disks) {
        const found = cp.disks.find((x) => x.slot === d.slot);
        if (!found) throw ErrInvalidArgument(`VM ${vm}: ${d.id} (${d.slot}) is no longer attached; a disk cannot be removed (unprotect and protect again)`);
        let image: DiskImage;
        const path = localPath(source, found.file);
        try {
          image = await openDisk(path, { readOnly: true });
        } catch (err) {
          throw new LifeboatError('unavailable', `VM ${vm}: ${d.id}: opening the checkpoint's file ${path}: ${userMessage(err) ?? String(err)}`, { cause: err });
        }
        disks.set(d.id, { image, cycle: new HypervCycle(found.ranges, image.virtualSize, found.lost), tracking: { node: d.slot, bitmap: state.referencePoint ?? '', granularity: 0 } });
      }
    } catch (err) {
      for (const d of disks.values()) await d.image.close();
      await settle(o, state, false).catch(() => undefined);
      throw err;
    }
    return new HypervVmView(o, state, disks, cp.consistency, capturedMs, warnings);
  }

  /** The VM as the host describes it now. */
  async machine(): Promise<MachineConfig> {
    return machineOf(await describeVm(this.o.runner, this.o.vm, this.o.source.vmName));
  }

  /**
   * Closes the files, then settles the checkpoint: converted into the new reference point when every
   * disk's cycle was committed (or there was no reference point yet), else destroyed.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const d of this.disks.values()) await d.image.close();
    const all = [...this.disks.values()].every((d) => d.cycle.settled === 'committed');
    this.state = await settle(this.o, this.state, all || this.state.referencePoint === null);
  }
}

/** Converts (advance) or destroys the checkpoint; the replaced reference point is destroyed last. */
async function settle(o: HypervVmViewOptions, state: StateFile, advance: boolean): Promise<StateFile> {
  const { vm, source, runner } = o;
  if (!state.checkpoint) return state;
  if (!advance) {
    await runStep(runner, vm, 'rct-release', releaseScript(source.vmName, { checkpoint: state.checkpoint }), z.object({ released: z.number() }));
    const next = { ...state, checkpoint: null };
    await writeJsonAtomic(o.stateFile, next);
    return next;
  }
  const { referencePoint } = await runStep(runner, vm, 'rct-convert', convertScript(source.vmName, state.checkpoint), z.object({ referencePoint: z.string().min(1) }));
  const old = state.referencePoint;
  let next: StateFile = { referencePoint, checkpoint: null, release: old && old !== referencePoint ? [...state.release, old] : state.release };
  await writeJsonAtomic(o.stateFile, next);
  if (old && old !== referencePoint) {
    try {
      await runStep(runner, vm, 'rct-release', releaseScript(source.vmName, { referencePoint: old }), z.object({ released: z.number() }));
      next = { ...next, release: next.release.filter((x) => x !== old) };
      await writeJsonAtomic(o.stateFile, next);
    } catch {
      // Kept in `release`: the next cycle destroys it first.
    }
  }
  return next;
}

/** vms/<vm>/hyperv.json */
export function hypervStateFile(vmDir: string): string {
  return join(vmDir, 'hyperv.json');
}
