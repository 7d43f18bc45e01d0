/**
 * protect --source libvirt: the disks of a libvirt domain from `virsh dumpxml` (every writable disk,
 * CD-ROMs and read-only disks left out, or those named by --disk as targets such as vda), a
 * checkpoint with a bitmap on each (libvirt keeps the bitmaps in the qcow2 images, so only qcow2
 * disks can be tracked: any other is refused with what to do), and the domain's vCPUs, memory,
 * firmware and NICs (with the guest's addresses when its agent answers) read to show what the engine
 * will report (it reads them again every cycle).
 */
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ErrInvalidArgument } from '../../shared/errors.js';
import type { DiskConfig, HardwareConfig, NicConfig, SourceConfig, VmConfig } from '../state/schema.js';
import { LibvirtDomain } from '../sources/libvirt-domain.js';
import type { DomainDisk } from '../sources/libvirt-xml.js';
import { Virsh } from '../sources/virsh.js';

export interface LibvirtProtectOptions {
  domain: string | undefined;
  connect: string | undefined;
  workDir: string | undefined;
  disk: string[] | undefined;
}

export interface LibvirtProtected {
  source: SourceConfig & { kind: 'libvirt' };
  disks: DiskConfig[];
  hardware: HardwareConfig;
  nics: NicConfig[];
  describe: string[];
}

/** Reads the domain through virsh, chooses its disks and starts a checkpoint covering them (idempotent). */
export async function protectLibvirt(vm: string, opts: LibvirtProtectOptions, existing: VmConfig | undefined, defaultWorkDir: string): Promise<LibvirtProtected> {
  const before = existing?.source?.kind === 'libvirt' ? existing.source : undefined;
  const domain = opts.domain ?? before?.domain;
  if (!domain) throw ErrInvalidArgument('--source libvirt needs --domain NAME (the libvirt domain)');
  if (before && opts.domain && opts.domain !== before.domain) throw ErrInvalidArgument(`${vm} is protected as domain ${before.domain}; unprotect it to change the domain`);
  const connect = opts.connect ?? before?.connect ?? null;
  const workDir = opts.workDir ? resolve(opts.workDir) : before?.workDir ?? defaultWorkDir;
  const dom = new LibvirtDomain(new Virsh(vm, connect), domain);
  const info = await dom.info();
  const writable = info.disks.filter((d) => d.device === 'disk' && !d.readOnly);
  // On a protected VM, no --disk keeps its disks: protect VM --frequency 5m changes that alone.
  const chosen = existing && !opts.disk?.length ? [] : chooseDisks(writable, opts.disk);
  if (chosen.length === 0 && !existing) throw ErrInvalidArgument(`VM ${vm}: domain ${domain} has no writable disk`);
  const disks: DiskConfig[] = [...(existing?.disks ?? [])];
  let next = Math.max(-1, ...disks.map((d) => Number(d.id.slice(4)))) + 1;
  for (const d of chosen) if (!disks.some((x) => x.node === d.target)) disks.push({ id: `disk${next++}`, path: d.file || d.target, node: d.target });
  const gone = disks.filter((d) => !writable.some((w) => w.target === d.node));
  if (gone.length > 0) throw ErrInvalidArgument(`VM ${vm}: ${gone.map((d) => `${d.id} (${d.node ?? d.path})`).join(', ')} no longer a writable disk of domain ${domain}; a disk cannot be removed (unprotect and protect again)`);
  const untrackable = disks.map((d) => writable.find((w) => w.target === d.node)!).filter((w) => w.format !== 'qcow2');
  if (untrackable.length > 0) {
    throw ErrInvalidArgument(`VM ${vm}: ${untrackable.map((w) => `disk ${w.target} of domain ${domain} is ${w.format || 'of no stated format'}`).join(', ')}: libvirt's checkpoints need qcow2 (convert it, or leave it out with --disk)`);
  }
  await mkdir(workDir, { recursive: true });
  const targets = disks.map((d) => d.node!);
  await dom.protect(targets, info.disks.map((d) => d.target).filter((t) => !targets.includes(t)), workDir);
  const addresses = info.guestAgent ? await dom.guestAddresses() : new Map<string, string[]>();
  return {
    source: { kind: 'libvirt', domain, connect, workDir, guestAgent: info.guestAgent },
    disks, hardware: info.hardware, nics: info.nics.map((n) => ({ ...n, addresses: addresses.get(n.mac) ?? [] })),
    describe: disks.map((d) => { const w = writable.find((x) => x.target === d.node)!; return `${d.id} disk ${w.target} ${w.file} (${w.format})`; }),
  };
}

function chooseDisks(found: DomainDisk[], named: string[] | undefined): DomainDisk[] {
  if (!named || named.length === 0) return found;
  return named.map((n) => {
    const d = found.find((x) => x.target === n);
    if (!d) throw ErrInvalidArgument(`--disk ${n}: not a writable disk of this domain (its disks: ${found.map((x) => x.target).join(', ') || 'none'})`);
    return d;
  });
}
