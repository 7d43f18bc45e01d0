/**
 * A VM's point in time through the libvirt source, for one cycle of the engine (docs/agent.md "The
 * libvirt source"): `virsh backup-begin` in pull mode, incremental from our oldest checkpoint covering
 * each disk (full for a disk none covers: lost, a resync), creating the next checkpoint at the same
 * instant; libvirt's qemu exports each disk on a unix socket in the work directory with
 * `qemu:dirty-bitmap:backup-<disk>`, read with our NBD client (shared/qemu/view-cycle.ts, the qemu
 * source's read side); `domjobabort` ends the job. When every disk's log was acknowledged the older
 * checkpoints are deleted; otherwise the new one is, and the older stay, so the next cycle reads
 * every change since the last acknowledged one again.
 *
 * Input: the VM's name (messages), the domain, the connection URI, the disks' ids and targets, the
 * work directory, whether to freeze the guest. Output: a LiveView. Failure: libvirt unreachable or the
 * domain missing is one LifeboatError naming the VM and the connection (virsh.ts); a freeze that fails
 * gives a crash-consistent point with a warning, never a failed cycle.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DiskImage } from '../../shared/disk/index.js';
import { ErrInvalidArgument, LifeboatError, userMessage } from '../../shared/errors.js';
import { NbdClient } from '../../shared/nbd/client.js';
import { BaseAllocation } from '../../shared/nbd/protocol.js';
import { NbdDisk, nbdUri } from '../../shared/qemu/nbd-disk.js';
import { NbdViewCycle } from '../../shared/qemu/view-cycle.js';
import { LibvirtDomain, type Checkpoint } from './libvirt-domain.js';
import { backupXml, checkpointXml, type BackupDisk, type DomainInfo } from './libvirt-xml.js';
import type { LiveDiskView, LiveView, MachineConfig } from './live-view.js';
import { Virsh } from './virsh.js';

export const NbdSocketName = 'nbd.sock';
/** How long the guest may stay frozen: the thaw is sent by then whatever backup-begin does. */
export const MaxFrozenMs = 10_000;
const FreezeTimeoutMs = 15_000;

export interface LibvirtVmViewOptions {
  vm: string;
  domain: string;
  connect: string | null;
  workDir: string;
  disks: Array<{ id: string; target: string }>;
  /** An application-consistent point is due: domfsfreeze around backup-begin when the domain has a guest agent. */
  freeze: boolean;
  /** A shut-off domain is started paused for this view and destroyed after (the final cycle of a planned failover). */
  startIfOff?: boolean;
}

/** One disk's cycle: the backup export's dirty extents; commit() marks it acknowledged (the view settles checkpoints at close). */
export class LibvirtCycle extends NbdViewCycle {
  acknowledged = false;
  private ended = false;

  constructor(nbd: NbdClient, target: string, incremental: boolean) {
    super(nbd, incremental ? `qemu:dirty-bitmap:backup-${target}` : undefined);
  }

  async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.nbd.close().catch(() => undefined);
  }

  async commit(): Promise<void> {
    await this.end();
    this.acknowledged = true;
  }

  async abandon(): Promise<void> {
    await this.end();
  }
}

interface LibvirtDiskView extends LiveDiskView { cycle: LibvirtCycle }

export class LibvirtVmView implements LiveView {
  readonly kind = 'libvirt';
  private closed = false;

  private constructor(
    private readonly dom: LibvirtDomain,
    private readonly info: DomainInfo,
    readonly disks: Map<string, LibvirtDiskView>,
    readonly consistency: 'crash' | 'application',
    readonly capturedMs: number,
    readonly warnings: string[],
    /** Our checkpoints before this cycle, and the one it created. */
    private readonly older: Checkpoint[],
    private readonly created: string,
    private readonly startedPaused: boolean,
  ) {}

  /** The domain's machine from dumpxml, with the guest's addresses per NIC when its agent answers. */
  async machine(): Promise<MachineConfig> {
    const addresses = this.info.guestAgent ? await this.dom.guestAddresses() : new Map<string, string[]>();
    return { hardware: this.info.hardware, nics: this.info.nics.map((n) => ({ ...n, addresses: addresses.get(n.mac) ?? [] })) };
  }

  static async open(o: LibvirtVmViewOptions): Promise<LibvirtVmView> {
    await mkdir(o.workDir, { recursive: true });
    const dom = new LibvirtDomain(new Virsh(o.vm, o.connect), o.domain);
    const info = await dom.info();
    const missing = o.disks.filter((d) => !info.disks.some((x) => x.target === d.target));
    if (missing.length > 0) throw ErrInvalidArgument(`VM ${o.vm}: domain ${o.domain} has no disk ${missing.map((d) => d.target).join(', ')} any more (its disks: ${info.disks.map((d) => d.target).join(', ')})`);
    const state = await dom.state();
    let startedPaused = false;
    if (state === 'shut off' && o.startIfOff) {
      await dom.virsh.run(['start', '--domain', o.domain, '--paused']);
      startedPaused = true;
    } else if (state !== 'running' && state !== 'paused') {
      throw new LifeboatError('unavailable', `VM ${o.vm}: domain ${o.domain} is ${state}: the libvirt source reads a running (or paused) domain`);
    }
    const socket = join(o.workDir, NbdSocketName);
    const warnings: string[] = [];
    try {
      // An agent killed mid-cycle left its backup job: ended (its checkpoints stay: nothing is lost).
      if (await dom.abortBackupOn(socket)) warnings.push(`VM ${o.vm}: ended a backup job a previous cycle left`);
      const targets = o.disks.map((d) => d.target);
      const others = info.disks.map((d) => d.target).filter((t) => !targets.includes(t));
      let older = await dom.checkpoints();
      const created = LibvirtDomain.nextName(older);
      const plan = (cps: Checkpoint[]): BackupDisk[] => o.disks.map((d) => ({
        target: d.target, incremental: cps.find((c) => c.disks.includes(d.target))?.name, scratch: join(o.workDir, `scratch-${d.target}.qcow2`),
      }));
      let disks = plan(older);
      const begin = async () => {
        for (const d of disks) await rm(d.scratch, { force: true });
        await rm(socket, { force: true });
        await writeFile(join(o.workDir, 'backup.xml'), backupXml(socket, disks, others), { mode: 0o644 });
        await writeFile(join(o.workDir, 'checkpoint.xml'), checkpointXml(created, targets, others), { mode: 0o644 });
        await dom.virsh.run(['backup-begin', '--domain', o.domain, '--backupxml', join(o.workDir, 'backup.xml'), '--checkpointxml', join(o.workDir, 'checkpoint.xml')]);
        return Date.now();
      };
      const freeze = o.freeze && info.guestAgent ? new Freezer(dom, o.vm, warnings) : undefined;
      if (o.freeze && !info.guestAgent) warnings.push(`VM ${o.vm}: domain ${o.domain} has no guest agent channel: this point is crash-consistent`);
      let frozen = false;
      let capturedMs: number;
      try {
        frozen = freeze ? await freeze.freeze() : false;
        try {
          capturedMs = await begin();
        } catch (err) {
          // libvirt still lists a checkpoint whose bitmap qemu no longer has (a restored image): forget them, read whole.
          if (!/bitmap/i.test(userMessage(err) ?? '') || !disks.some((d) => d.incremental)) throw err;
          warnings.push(`VM ${o.vm}: ${userMessage(err)}: the checkpoints' bitmaps are gone; comparing every disk with its replica`);
          for (const c of older) await dom.deleteCheckpoint(c.name, true);
          older = [];
          disks = plan(older);
          capturedMs = await begin();
        }
      } finally {
        if (freeze) frozen = (await freeze.thaw()) && frozen;
      }
      const views = new Map<string, LibvirtDiskView>();
      try {
        for (const [i, d] of o.disks.entries()) {
          const incremental = disks[i]!.incremental !== undefined;
          const contexts = [BaseAllocation, ...(incremental ? [`qemu:dirty-bitmap:backup-${d.target}`] : [])];
          const nbd = await NbdClient.connect({ socketPath: socket, exportName: d.target, metaContexts: contexts });
          const cycle = new LibvirtCycle(nbd, d.target, incremental);
          let image: DiskImage;
          try { image = await NbdDisk.open(nbdUri(socket, d.target)); } catch (err) { await cycle.end(); throw err; }
          views.set(d.id, { image, cycle, tracking: { node: d.target, bitmap: created, granularity: 0 } });
        }
      } catch (err) {
        for (const v of views.values()) { await v.image.close(); await v.cycle.end(); }
        await dom.abortJob().catch(() => undefined);
        await dom.deleteCheckpoint(created).catch(() => undefined);
        throw err;
      }
      return new LibvirtVmView(dom, info, views, frozen ? 'application' : 'crash', capturedMs, warnings, older, created, startedPaused);
    } catch (err) {
      if (startedPaused) await dom.virsh.run(['destroy', '--domain', o.domain]).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Ends the backup job; every disk acknowledged: the older checkpoints go (the new one records from
   * this cycle's instant). Otherwise the new checkpoint goes and the older stay (unless a disk had
   * none: then the new one is kept, its base being under way).
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      for (const d of this.disks.values()) { await d.image.close(); await d.cycle.end(); }
      await this.dom.abortJob().catch(() => undefined);
      const cycles = [...this.disks.values()].map((d) => d.cycle);
      if (cycles.every((c) => c.acknowledged)) {
        for (const c of this.older) await this.dom.deleteCheckpoint(c.name);
      } else if (!cycles.some((c) => c.bitmapLost)) {
        await this.dom.deleteCheckpoint(this.created);
      }
    } finally {
      if (this.startedPaused) await this.dom.virsh.run(['destroy', '--domain', this.dom.name]).catch(() => undefined);
    }
  }
}

/** domfsfreeze before backup-begin, domfsthaw after it or after MaxFrozenMs, whichever first; always sent. */
class Freezer {
  private timer: NodeJS.Timeout | undefined;
  private thawed: Promise<boolean> | undefined;
  private expired = false;

  constructor(private readonly dom: LibvirtDomain, private readonly vm: string, private readonly warnings: string[]) {}

  async freeze(): Promise<boolean> {
    this.timer = setTimeout(() => { this.expired = true; void this.send(); }, MaxFrozenMs);
    try {
      const said = await this.dom.virsh.run(['domfsfreeze', '--domain', this.dom.name], FreezeTimeoutMs);
      return /froze [1-9]/i.test(said) && !this.expired;
    } catch (err) {
      this.warnings.push(`VM ${this.vm}: domfsfreeze: ${userMessage(err) ?? String(err)}: this point is crash-consistent`);
      return false;
    }
  }

  private send(): Promise<boolean> {
    clearTimeout(this.timer);
    this.thawed ??= this.dom.virsh.run(['domfsthaw', '--domain', this.dom.name], FreezeTimeoutMs).then(() => true, (err: unknown) => {
      this.warnings.push(`VM ${this.vm}: domfsthaw: ${userMessage(err) ?? String(err)}`);
      return false;
    });
    return this.thawed;
  }

  /** True when the guest stayed frozen until the point was taken. */
  async thaw(): Promise<boolean> {
    const held = !this.expired;
    await this.send();
    if (!held) this.warnings.push(`VM ${this.vm}: the guest was thawed after ${MaxFrozenMs} ms, before the point was taken: it is crash-consistent`);
    return held;
  }
}
