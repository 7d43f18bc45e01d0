/**
 * A VM's point in time through the qemu source, as the engine uses it for one cycle: connect to the
 * VM's QMP socket, clean what a killed agent left (views, exports, disabled bitmaps merged back), then
 * one transaction over every disk, between guest-fsfreeze-freeze and guest-fsfreeze-thaw when the
 * guest agent answers (an application-consistent point), and each disk's view opened as a read-only
 * DiskImage (nbd-disk.ts) beside its QemuCycle (its dirty extents and the bitmap's fate).
 *
 * Input: the VM's name (for messages), its QMP socket, its guest agent socket (optional), its disks'
 * ids and node names, a work directory of its own. Output: a QemuVmView. Failure: a QMP socket that
 * is missing or refuses is one LifeboatError 'unavailable' naming the VM and the socket; a guest
 * agent that does not answer or refuses to freeze makes the point crash-consistent (a warning), never
 * a failed cycle. close() abandons every cycle not committed (the bitmap merged back) and ends the views.
 */
import { mkdir } from 'node:fs/promises';
import { LifeboatError, userMessage } from '../../shared/errors.js';
import type { DiskImage } from '../../shared/disk/index.js';
import { GuestAgentClient, QmpClient } from '../../shared/qmp/client.js';
import { NbdDisk } from '../../shared/qemu/nbd-disk.js';
import { machineConfig } from './qemu-machine.js';
import type { LiveDiskView, LiveView, MachineConfig } from './live-view.js';
import { QemuSource, beginCyclesAt, type QemuCycle, type Quiescer } from '../../shared/qemu/source.js';

/** How long the guest may stay frozen: the thaw is sent by then whatever the transaction does. */
export const MaxFrozenMs = 10_000;
/** How long the guest agent gets to answer a ping before the point is crash-consistent. */
const GuestAgentPingMs = 3_000;
const FreezeTimeoutMs = 20_000;

export interface QemuVmViewOptions {
  vm: string;
  qmpSocket: string;
  /** qemu-guest-agent's socket; without it the point is crash-consistent. */
  guestAgentSocket?: string;
  /** Freeze the guest's filesystems for this point (application-consistent), when the agent answers. */
  freeze: boolean;
  disks: Array<{ id: string; node: string }>;
  workDir: string;
  granularity?: number;
}

export interface QemuDiskView extends LiveDiskView {
  cycle: QemuCycle;
  source: QemuSource;
}

/** Connects to the VM's QMP socket; a missing or refusing socket is one line naming the VM and the socket. */
export async function connectVmQmp(vm: string, socket: string): Promise<QmpClient> {
  try {
    return await QmpClient.connect(socket);
  } catch (err) {
    throw new LifeboatError('unavailable', `VM ${vm}: QMP socket ${socket}: ${userMessage(err)?.replace(/^qmp \S+: /, '') ?? String(err)}`, { cause: err });
  }
}

export class QemuVmView implements LiveView {
  readonly kind = 'qemu';
  private closed = false;
  private constructor(
    private readonly qmp: QmpClient,
    readonly disks: Map<string, QemuDiskView>,
    readonly consistency: 'crash' | 'application',
    readonly capturedMs: number,
    readonly warnings: string[],
    /** The guest agent's socket when it answered this cycle (its freeze was asked), else null. */
    private readonly answeringGuestAgent: string | null,
  ) {}

  /** The guest agent answered this cycle (its freeze was asked). */
  get guestAgentAnswered(): boolean { return this.answeringGuestAgent !== null; }

  /** The VM's machine as qemu says it now (and the guest's addresses through its agent when it answered this cycle). */
  machine(): Promise<MachineConfig> {
    return machineConfig(this.qmp, this.answeringGuestAgent);
  }

  static async open(o: QemuVmViewOptions): Promise<QemuVmView> {
    await mkdir(o.workDir, { recursive: true });
    const qmp = await connectVmQmp(o.vm, o.qmpSocket);
    const warnings: string[] = [];
    const opened: DiskImage[] = [];
    let cycles: QemuCycle[] = [];
    try {
      const sources = o.disks.map((d) => new QemuSource({ qmp, node: d.node, workDir: o.workDir, ...(o.granularity ? { granularity: o.granularity } : {}) }));
      // An agent killed mid-cycle left views, exports and a disabled bitmap: cleaned, merged back.
      for (const s of sources) await s.recover();
      const quiescer = o.freeze && o.guestAgentSocket ? await guestFreezer(o.vm, o.guestAgentSocket, warnings) : undefined;
      if (o.freeze && !o.guestAgentSocket) warnings.push(`VM ${o.vm}: no guest agent socket: this point is crash-consistent`);
      const begun = await beginCyclesAt(sources, quiescer);
      cycles = begun.cycles;
      const disks = new Map<string, QemuDiskView>();
      for (const [i, d] of o.disks.entries()) {
        const image = await NbdDisk.open(sources[i]!.viewUri());
        opened.push(image);
        const cycle = cycles[i]!;
        disks.set(d.id, { image, cycle, source: sources[i]!, tracking: { node: d.node, bitmap: cycle.liveBitmap, granularity: cycle.granularity } });
      }
      return new QemuVmView(qmp, disks, begun.frozen ? 'application' : 'crash', begun.capturedMs, warnings, quiescer !== undefined ? o.guestAgentSocket! : null);
    } catch (err) {
      for (const image of opened) await image.close();
      for (const c of cycles) await c.abandon().catch(() => undefined);
      await qmp.close();
      throw err;
    }
  }

  /** Abandons every cycle not committed (its changes go back into the live bitmap), ends the views, disconnects. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      for (const d of this.disks.values()) await d.image.close();
      for (const d of this.disks.values()) await d.cycle.abandon();
    } finally {
      await this.qmp.close();
    }
  }
}

/**
 * guest-fsfreeze around the transaction: freeze() is true when the agent froze the filesystems;
 * the thaw is sent after the transaction, or after MaxFrozenMs if the transaction has not ended by
 * then (the point is then crash-consistent: frozen() turns false), and always at least once.
 */
async function guestFreezer(vm: string, socket: string, warnings: string[]): Promise<Quiescer | undefined> {
  let ga: GuestAgentClient;
  try {
    ga = await GuestAgentClient.connect(socket, { timeoutMs: GuestAgentPingMs });
  } catch (err) {
    warnings.push(`VM ${vm}: guest agent ${socket} did not answer (${userMessage(err) ?? String(err)}): this point is crash-consistent`);
    return undefined;
  }
  let thawed: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let expired = false;
  const thaw = (): Promise<void> => {
    clearTimeout(timer);
    thawed ??= ga.execute('guest-fsfreeze-thaw', undefined, { timeoutMs: FreezeTimeoutMs }).then(
      () => undefined,
      (err: unknown) => { warnings.push(`VM ${vm}: guest-fsfreeze-thaw: ${userMessage(err) ?? String(err)}`); },
    ).finally(() => ga.close());
    return thawed;
  };
  return {
    async freeze() {
      timer = setTimeout(() => { expired = true; void thaw(); }, MaxFrozenMs);
      try {
        const n = await ga.execute<number>('guest-fsfreeze-freeze', undefined, { timeoutMs: FreezeTimeoutMs });
        return n > 0 && !expired;
      } catch (err) {
        warnings.push(`VM ${vm}: guest-fsfreeze-freeze: ${userMessage(err) ?? String(err)}: this point is crash-consistent`);
        return false;
      }
    },
    async thaw() {
      const held = !expired;
      await thaw();
      if (!held) warnings.push(`VM ${vm}: the guest was thawed after ${MaxFrozenMs} ms, before the point was taken: it is crash-consistent`);
      return held;
    },
  };
}
