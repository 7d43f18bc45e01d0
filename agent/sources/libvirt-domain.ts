/**
 * A libvirt domain as the libvirt source uses it, through virsh (virsh.ts): its description
 * (dumpxml), its run state, our checkpoints (`lifeboat-<n>`, each with a bitmap on the protected disks),
 * and a backup job of ours left by an agent killed mid-cycle.
 *
 * Checkpoints: libvirt keeps every checkpoint's bitmap recording from the checkpoint's instant on, so a
 * backup `incremental` from our oldest checkpoint that covers a disk reads everything changed since
 * the last acknowledged cycle, whatever cycles failed since (docs/agent.md "The libvirt source").
 *
 * Input: a Virsh and the domain's name. Output: plain values. Failure: virsh's LifeboatErrors.
 */
import { writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { backupSocket, checkpointDisks, checkpointXml, parseDomain, type DomainInfo } from './libvirt-xml.js';
import type { Virsh } from './virsh.js';

export const CheckpointPrefix = 'lifeboat-';
const isOurs = (name: string) => name.startsWith(CheckpointPrefix) && /^\d+$/.test(name.slice(CheckpointPrefix.length));
const numberOf = (name: string) => Number(name.slice(CheckpointPrefix.length));

export interface Checkpoint {
  name: string;
  /** The disks (targets) it has a bitmap on. */
  disks: string[];
}

export class LibvirtDomain {
  constructor(readonly virsh: Virsh, readonly name: string) {}

  /** The domain as dumpxml describes it (the live definition while it runs). */
  async info(): Promise<DomainInfo> {
    return parseDomain(await this.virsh.run(['dumpxml', '--domain', this.name]));
  }

  /** 'running', 'paused', 'shut off', … as domstate says it. */
  async state(): Promise<string> {
    return (await this.virsh.run(['domstate', '--domain', this.name])).trim();
  }

  /** Our checkpoints, oldest first. */
  async checkpoints(): Promise<Checkpoint[]> {
    const names = (await this.virsh.run(['checkpoint-list', '--domain', this.name, '--name'])).split('\n').map((l) => l.trim()).filter(isOurs);
    names.sort((a, b) => numberOf(a) - numberOf(b));
    const out: Checkpoint[] = [];
    for (const name of names) {
      out.push({ name, disks: checkpointDisks(await this.virsh.run(['checkpoint-dumpxml', '--domain', this.name, '--checkpointname', name, '--no-domain'])) });
    }
    return out;
  }

  /** The name of the checkpoint after `ours` (the first one: numbered by the clock). */
  static nextName(ours: Checkpoint[]): string {
    const last = ours.at(-1);
    return `${CheckpointPrefix}${last ? numberOf(last.name) + 1 : Date.now()}`;
  }

  /**
   * Starts tracking `targets`: a checkpoint with a bitmap on each, unless every one of them is
   * covered by a checkpoint of ours already (idempotent). `others` are the domain's other disks.
   */
  async protect(targets: string[], others: string[], workDir: string): Promise<void> {
    const ours = await this.checkpoints();
    if (targets.every((t) => ours.some((c) => c.disks.includes(t)))) return;
    const file = join(workDir, 'checkpoint.xml');
    await writeFile(file, checkpointXml(LibvirtDomain.nextName(ours), targets, others), { mode: 0o644 });
    try {
      await this.virsh.run(['checkpoint-create', '--domain', this.name, '--xmlfile', file]);
    } finally {
      await rm(file, { force: true });
    }
  }

  /** Deletes a checkpoint (its bitmaps too; metadataOnly: libvirt's record alone, for one whose bitmap is gone). */
  async deleteCheckpoint(name: string, metadataOnly = false): Promise<void> {
    await this.virsh.run(['checkpoint-delete', '--domain', this.name, '--checkpointname', name, ...(metadataOnly ? ['--metadata'] : [])]);
  }

  /** Ends a backup job whose NBD server is on `socket` (ours, left by a killed agent); true when there was one. */
  async abortBackupOn(socket: string): Promise<boolean> {
    let xml: string;
    try {
      xml = await this.virsh.run(['backup-dumpxml', '--domain', this.name]);
    } catch {
      return false; // no backup job runs
    }
    if (backupSocket(xml) !== socket) return false;
    await this.abortJob();
    return true;
  }

  /** domjobabort: ends the backup job (libvirt removes its scratch files and stops the NBD server). */
  async abortJob(): Promise<void> {
    await this.virsh.run(['domjobabort', '--domain', this.name]);
  }
}
