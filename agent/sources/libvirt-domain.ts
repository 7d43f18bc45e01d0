/**
 * A libvirt domain as the libvirt source uses it, through virsh (virsh.ts): its description
 * (dumpxml), its run state, our checkpoints (`lifeboat-<n>`, each with a bitmap on the protected disks),
 * a backup job of ours left by an agent killed mid-cycle, and the guest's addresses as its guest agent
 * reports them (`domifaddr --source agent`).
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

/** How long domifaddr may wait on the guest agent before the addresses are left out of this report. */
const GuestAgentTimeoutMs = 15_000;

/**
 * `virsh domifaddr --full` as addresses by MAC: a table of name, MAC, protocol and ADDR/PREFIX, one
 * line per address (--full repeats the name and MAC on each). Loopback (MAC all zeros), link-local
 * IPv6 and anything not in the table's shape are left out.
 */
export function parseDomifaddr(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*\S+\s+([0-9a-f]{2}(?::[0-9a-f]{2}){5})\s+(ipv4|ipv6)\s+(\S+\/\d+)\s*$/i.exec(line);
    if (!m) continue;
    const mac = m[1]!.toLowerCase();
    const address = m[3]!;
    if (mac === '00:00:00:00:00:00' || (m[2] === 'ipv6' && /^fe[89ab][0-9a-f]:/i.test(address))) continue;
    out.set(mac, [...(out.get(mac) ?? []), address]);
  }
  return out;
}

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

  /**
   * The guest's addresses by MAC (ADDR/PREFIX, link-local IPv6 and loopback left out), from
   * `domifaddr --source agent --full`; none when the guest agent does not answer (not running yet, or
   * no agent channel): the machine is still reported, as the qemu source does.
   */
  async guestAddresses(): Promise<Map<string, string[]>> {
    let out: string;
    try {
      out = await this.virsh.run(['domifaddr', '--domain', this.name, '--source', 'agent', '--full'], GuestAgentTimeoutMs);
    } catch {
      return new Map();
    }
    return parseDomifaddr(out);
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
