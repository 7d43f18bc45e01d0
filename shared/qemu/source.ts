/**
 * The qemu source: changed extents and a point-in-time view of a running QEMU's disk, from qemu's own
 * dirty bitmap and NBD export (docs/agent.md "The qemu source"; the cycle checked in
 * shared/spikes/qemu-live-cycle.md).
 *
 * - protect(): a persistent dirty bitmap `lifeboat-<n>` on the disk's format node (qcow2 stores it
 *   across restarts; on raw it cannot be persistent and is lost with the process).
 * - begin(): one QMP `transaction` starts a fleecing view (a qcow2 overlay backed by the disk node,
 *   filled by `blockdev-backup sync=none` copy-before-write, never flushed: it is thrown away after
 *   the cycle), adds bitmap n+1 and disables bitmap n.
 *   The view is exported by qemu's NBD server (one per qemu, shared by the VM's disks) on
 *   `<workDir>/nbd.sock` with bitmap n; the cycle
 *   reads only its dirty extents (BLOCK_STATUS `qemu:dirty-bitmap:lifeboat-<n>`, then READ).
 * - commit(): ends the view, removes bitmap n (the service acknowledged the log).
 * - abandon(): ends the view, merges bitmap n into n+1 and removes it, so nothing is forgotten.
 * - A lost bitmap (none of ours on the node: qemu restarted without it, a raw disk, a restored VM) is
 *   detected at begin(): the cycle then has bitmapLost = true, a new bitmap is added in the same
 *   transaction, and extents() yields every allocated range of the view (a resync by digests).
 * - recover(): after an agent killed mid-cycle, removes our leftover export, job and overlay, and
 *   merges every disabled bitmap of ours into the live one (changes may ship twice, never lost).
 *
 * Input: a connected QmpClient, the disk's node name (and the drive id for messages), a work
 * directory for the overlay file and the NBD socket. Output: TrackedCycle-shaped cycles with read().
 * Failure: qemu refusing a command is a QmpError (a LifeboatError naming the command); a missing
 * node is 'not_found' naming the node.
 */
import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BaseAllocation } from '../nbd/protocol.js';
import { NbdClient } from '../nbd/client.js';
import type { QmpClient } from '../qmp/client.js';
import { nbdUri } from './nbd-disk.js';
import { listBitmaps, nodeInfo, type BitmapInfo } from './nodes.js';
import { NbdViewCycle } from './view-cycle.js';

const execFileP = promisify(execFile);
export const BitmapPrefix = 'lifeboat-';
/** Names of the per-cycle objects in qemu (one cycle per node at a time). */
const viewNode = (node: string) => `lifeboat-view-${node}`;
const jobId = (node: string) => `lifeboat-fleece-${node}`;
const ExportPrefix = 'lifeboat-export-';
const exportId = (node: string) => `${ExportPrefix}${node}`;
/**
 * qemu runs one NBD server per process, so every disk of a VM shares it: one socket per work
 * directory (give each VM its own work directory).
 */
export const NbdSocketName = 'nbd.sock';

export interface QemuSourceOptions {
  qmp: QmpClient;
  /** The disk's format node (query-named-block-nodes), e.g. the -drive node-name. */
  node: string;
  /** Where the fleecing overlay and the NBD socket live while a cycle runs. */
  workDir: string;
  /** Persistent bitmap (default: where the node's format stores one, qcow2; a raw node refuses it). */
  persistent?: boolean;
  /**
   * Bitmap granularity in bytes, a power of two (default: qemu's, the qcow2 cluster size or 64 KiB).
   * Smaller granules cost a bigger bitmap but cut what scattered small writes make a cycle read.
   */
  granularity?: number;
  /**
   * The names of this tracker's bitmaps: `<prefix><n>` (default `lifeboat-`). The service's reverse
   * cycles use `lifeboat-rv-` on a failed-over VM's overlays, beside the driver's `lifeboat-fo`.
   */
  prefix?: string;
}

const generationOf = (prefix: string, name: string) => Number(name.slice(prefix.length));
const isOurs = (prefix: string, b: BitmapInfo) => b.name.startsWith(prefix) && /^\d+$/.test(b.name.slice(prefix.length));

export class QemuSource {
  constructor(private readonly options: QemuSourceOptions) {}

  private get qmp(): QmpClient { return this.options.qmp; }
  private get prefix(): string { return this.options.prefix ?? BitmapPrefix; }
  get qmpClient(): QmpClient { return this.options.qmp; }
  get node(): string { return this.options.node; }

  /** Our bitmaps on the node, oldest first. */
  async bitmaps(): Promise<BitmapInfo[]> {
    return (await listBitmaps(this.qmp, this.options.node)).filter((b) => isOurs(this.prefix, b)).sort((a, b) => generationOf(this.prefix, a.name) - generationOf(this.prefix, b.name));
  }

  /** The bitmap recording now, or undefined when none of ours is there (lost). */
  async liveBitmap(): Promise<BitmapInfo | undefined> {
    return (await this.bitmaps()).filter((b) => b.recording).at(-1);
  }

  /** Starts tracking: adds bitmap lifeboat-0 unless one of ours records already. Idempotent. */
  async protect(): Promise<void> {
    if (await this.liveBitmap()) return;
    const { driver } = await nodeInfo(this.qmp, this.options.node);
    await this.qmp.execute('block-dirty-bitmap-add', { node: this.options.node, name: `${this.prefix}0`, ...this.bitmapArgs(driver) });
  }

  /** Persistent where the format can store it (qcow2), unless the options say otherwise. */
  private bitmapArgs(driver: string, granularity = this.options.granularity): Record<string, unknown> {
    return { persistent: this.options.persistent ?? driver === 'qcow2', ...(granularity ? { granularity } : {}) };
  }

  /** Cleans what a killed cycle left; merges disabled bitmaps of ours into the live one. */
  async recover(): Promise<void> {
    await endView(this.qmp, this.options.node, this.options.workDir);
    const ours = await this.bitmaps();
    const live = ours.filter((b) => b.recording).at(-1);
    if (!live) return;
    for (const old of ours.filter((b) => !b.recording)) {
      await this.qmp.execute('block-dirty-bitmap-merge', { node: this.options.node, target: live.name, bitmaps: [old.name] });
      await this.qmp.execute('block-dirty-bitmap-remove', { node: this.options.node, name: old.name });
    }
  }

  /** Freezes the disk's state and its bitmap in one transaction and exports the view. */
  async begin(): Promise<QemuCycle> {
    return (await beginCycles([this]))[0]!;
  }

  /** Creates the overlay and adds its node; returns this disk's actions for the shared transaction. */
  async prepare(): Promise<PreparedView> {
    const { node, workDir } = this.options;
    const info = await nodeInfo(this.qmp, node);
    const live = await this.liveBitmap();
    const generation = live ? generationOf(this.prefix, live.name) + 1 : Date.now();
    const next = `${this.prefix}${generation}`;
    const overlay = join(workDir, `${viewNode(node)}.qcow2`);
    await rm(overlay, { force: true });
    await execFileP('qemu-img', ['create', '-q', '-f', 'qcow2', overlay, String(info.size)]);
    // The overlay lives for one cycle and is thrown away: no flush is ever needed for it.
    await this.qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': viewNode(node), cache: { 'no-flush': true }, file: { driver: 'file', filename: overlay, cache: { 'no-flush': true } }, backing: node });
    const actions: TransactionAction[] = [
      { type: 'block-dirty-bitmap-add', data: { node, name: next, ...this.bitmapArgs(info.driver, live?.granularity ?? this.options.granularity) } },
    ];
    if (live) actions.push({ type: 'block-dirty-bitmap-disable', data: { node, name: live.name } });
    actions.push({ type: 'blockdev-backup', data: { device: node, target: viewNode(node), sync: 'none', 'job-id': jobId(node) } });
    return { source: this, actions, live, next };
  }

  /** After the transaction: exports the view on qemu's NBD server and connects to it. */
  async export(view: PreparedView): Promise<QemuCycle> {
    const { node, workDir } = this.options;
    const { live, next } = view;
    const socket = join(workDir, NbdSocketName);
    await startNbdServer(this.qmp, socket);
    await this.qmp.execute('block-export-add', {
      type: 'nbd', id: exportId(node), 'node-name': viewNode(node), name: node, writable: false, ...(live ? { bitmaps: [live.name] } : {}),
    });
    const contexts = [BaseAllocation, ...(live ? [`qemu:dirty-bitmap:${live.name}`] : [])];
    const nbd = await NbdClient.connect({ socketPath: socket, exportName: node, metaContexts: contexts });
    return new QemuCycle(this.qmp, node, workDir, nbd, live?.name, next, live?.granularity ?? 0);
  }

  /** Removes whatever of this disk's view exists (after a failed begin). */
  endView(): Promise<void> {
    return endView(this.qmp, this.options.node, this.options.workDir);
  }

  /** The NBD URI of this disk's view while a cycle runs (what NbdDisk and nbdinfo open). */
  viewUri(): string {
    return nbdUri(join(this.options.workDir, NbdSocketName), this.options.node);
  }
}

interface TransactionAction { type: string; data: Record<string, unknown> }

/** One disk's part of a transaction, between prepare() and export(). */
export interface PreparedView {
  source: QemuSource;
  actions: TransactionAction[];
  live: BitmapInfo | undefined;
  next: string;
}

/**
 * Runs around the transaction: freeze() is true when the guest's filesystems are frozen; thaw()
 * always follows and is true when they stayed frozen until it was called (no timeout thawed them).
 */
export interface Quiescer {
  freeze(): Promise<boolean>;
  thaw(): Promise<boolean>;
}

/**
 * Begins a cycle on every source (disks of one qemu) at one instant: the views of all disks and
 * their bitmap swaps are one QMP `transaction`, so the VM's disks are captured together. With a
 * quiescer the transaction runs between its freeze and its thaw (the thaw runs whatever happens).
 * Returns the cycles in the sources' order and whether the guest was frozen at the instant.
 */
export async function beginCycles(sources: QemuSource[], quiescer?: Quiescer): Promise<QemuCycle[]> {
  return (await beginCyclesAt(sources, quiescer)).cycles;
}

/** beginCycles, with whether the guest was frozen at the instant and the instant (ms). */
export async function beginCyclesAt(sources: QemuSource[], quiescer?: Quiescer): Promise<{ cycles: QemuCycle[]; frozen: boolean; capturedMs: number }> {
  const prepared: PreparedView[] = [];
  const cleanup = async () => { for (const s of sources) await s.endView().catch(() => undefined); };
  try {
    for (const s of sources) prepared.push(await s.prepare());
    const qmp = sources[0]!.qmpClient;
    let frozen = false;
    let capturedMs: number;
    try {
      frozen = quiescer ? await quiescer.freeze() : false;
      await qmp.execute('transaction', { actions: prepared.flatMap((p) => p.actions) });
      capturedMs = Date.now();
    } finally {
      if (quiescer) frozen = (await quiescer.thaw()) && frozen;
    }
    const cycles: QemuCycle[] = [];
    for (const p of prepared) cycles.push(await p.source.export(p));
    return { cycles, frozen, capturedMs };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** One cycle: its dirty extents and reads of the frozen view (view-cycle.ts), and the bitmap's fate. */
export class QemuCycle extends NbdViewCycle {
  private ended = false;
  private settled = false;

  constructor(
    private readonly qmp: QmpClient, private readonly node: string, private readonly workDir: string,
    nbd: NbdClient,
    /** The frozen bitmap this cycle ships, or undefined when it was lost. */
    readonly frozenBitmap: string | undefined,
    /** The bitmap recording from the cycle's instant on. */
    readonly liveBitmap: string,
    readonly granularity: number,
  ) {
    super(nbd, frozenBitmap ? `qemu:dirty-bitmap:${frozenBitmap}` : undefined);
  }

  /** Ends the point-in-time view (export, NBD server, copy-before-write job, overlay). Idempotent. */
  async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.nbd.close().catch(() => undefined);
    await endView(this.qmp, this.node, this.workDir);
  }

  /** The service acknowledged: forget the frozen bitmap's changes. */
  async commit(): Promise<void> {
    await this.end();
    if (this.settled) return;
    this.settled = true;
    if (this.frozenBitmap) await this.qmp.execute('block-dirty-bitmap-remove', { node: this.node, name: this.frozenBitmap });
  }

  /** Not acknowledged: the frozen bitmap's changes go back into the live one. Safe to call twice. */
  async abandon(): Promise<void> {
    await this.end();
    if (this.settled) return;
    this.settled = true;
    if (!this.frozenBitmap) return;
    await this.qmp.execute('block-dirty-bitmap-merge', { node: this.node, target: this.liveBitmap, bitmaps: [this.frozenBitmap] });
    await this.qmp.execute('block-dirty-bitmap-remove', { node: this.node, name: this.frozenBitmap });
  }
}

/** Starts qemu's NBD server on socket, or finds it running there for another disk's cycle. */
async function startNbdServer(qmp: QmpClient, socket: string): Promise<void> {
  try {
    await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
  } catch (err) {
    const running = /already running/i.test((err as Error).message);
    if (!running) throw err;
    const exports = await qmp.execute<Array<{ id: string }>>('query-block-exports');
    // Running with none of our exports: a server an agent killed mid-cycle left, or someone else's.
    if (!exports.some((e) => e.id.startsWith(ExportPrefix))) {
      await qmp.execute('nbd-server-stop');
      await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
    }
  }
}

/** Removes the per-cycle objects of a node, whichever exist (tolerates each one missing). */
async function endView(qmp: QmpClient, node: string, workDir: string): Promise<void> {
  const exports = await qmp.execute<Array<{ id: string }>>('query-block-exports');
  if (exports.some((e) => e.id === exportId(node))) {
    // 'hard': a client left connected (an agent that died mid-read) is disconnected.
    const gone = qmp.waitEvent('BLOCK_EXPORT_DELETED', (d) => d.id === exportId(node), 10_000);
    gone.catch(() => undefined);
    await qmp.execute('block-export-del', { id: exportId(node), mode: 'hard' });
    await gone;
  }
  // qemu has one NBD server: stop it only when no other disk's cycle still exports through it.
  const left = await qmp.execute<Array<{ id: string }>>('query-block-exports');
  if (!left.some((e) => e.id.startsWith(ExportPrefix))) {
    await qmp.execute('nbd-server-stop').catch(() => undefined);
    await rm(join(workDir, NbdSocketName), { force: true });
  }
  const jobs = await qmp.execute<Array<{ device: string }>>('query-block-jobs');
  if (jobs.some((j) => j.device === jobId(node))) {
    const done = qmp.waitEvent('BLOCK_JOB_CANCELLED', (d) => d.device === jobId(node), 10_000);
    done.catch(() => undefined);
    await qmp.execute('block-job-cancel', { device: jobId(node), force: true });
    await done;
  }
  const nodes = await qmp.execute<Array<{ 'node-name': string }>>('query-named-block-nodes', { flat: true });
  if (nodes.some((n) => n['node-name'] === viewNode(node))) await qmp.execute('blockdev-del', { 'node-name': viewNode(node) });
  await rm(join(workDir, `${viewNode(node)}.qcow2`), { force: true });
}
