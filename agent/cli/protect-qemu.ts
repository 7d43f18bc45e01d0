/**
 * protect --source qemu: the disks of a running QEMU found from its block graph over its QMP socket
 * (or named by --disk as drive ids or node names), a dirty bitmap started on each, and the VM's
 * vCPUs, memory, firmware and NICs (with the guest's addresses when its agent answers) read to show
 * what the engine will report (it reads them again every cycle); options given on the command line win
 * over what qemu says.
 */
import { resolve } from 'node:path';
import { ErrInvalidArgument } from '../../shared/errors.js';
import { formatBytes } from '../../shared/units.js';
import type { DiskConfig, HardwareConfig, NicConfig, SourceConfig, VmConfig } from '../state/schema.js';
import { blockDisks, machineConfig, type BlockDisk } from '../sources/qemu-machine.js';
import { QemuSource } from '../../shared/qemu/source.js';
import { connectVmQmp } from '../sources/qemu-view.js';

export interface QemuProtectOptions {
  qmp: string | undefined;
  guestAgent: string | undefined;
  granularity: number | undefined;
  disk: string[] | undefined;
}

export interface QemuProtected {
  source: SourceConfig & { kind: 'qemu' };
  disks: DiskConfig[];
  hardware: HardwareConfig;
  nics: NicConfig[];
  describe: string[];
}

/** Reads the VM through QMP, chooses its disks and starts a bitmap on each (idempotent). */
export async function protectQemu(vm: string, opts: QemuProtectOptions, existing: VmConfig | undefined, workDir: string): Promise<QemuProtected> {
  if (!opts.qmp) throw ErrInvalidArgument('--source qemu needs --qmp SOCKET (the VM\'s QMP socket, for the agent alone)');
  const qmpPath = resolve(opts.qmp);
  const qmp = await connectVmQmp(vm, qmpPath);
  try {
    const found = await blockDisks(qmp);
    const chosen = chooseDisks(found, opts.disk);
    if (chosen.length === 0) throw ErrInvalidArgument(`VM ${vm}: qemu at ${qmpPath} has no writable disk`);
    const disks: DiskConfig[] = [...(existing?.disks ?? [])];
    let next = Math.max(-1, ...disks.map((d) => Number(d.id.slice(4)))) + 1;
    for (const b of chosen) if (!disks.some((d) => d.node === b.node)) disks.push({ id: `disk${next++}`, path: b.file, node: b.node });
    const missing = disks.filter((d) => d.node === undefined || !found.some((b) => b.node === d.node));
    if (missing.length > 0) throw ErrInvalidArgument(`VM ${vm}: ${missing.map((d) => `${d.id} (${d.node ?? d.path})`).join(', ')} no longer in qemu's block graph; a disk cannot be removed (unprotect and protect again)`);
    for (const d of disks) await new QemuSource({ qmp, node: d.node!, workDir, ...(opts.granularity ? { granularity: opts.granularity } : {}) }).protect();
    const guestAgent = opts.guestAgent ? resolve(opts.guestAgent) : existing?.source?.kind === 'qemu' ? existing.source.guestAgent : null;
    const machine = await machineConfig(qmp, guestAgent);
    const granularity = opts.granularity ?? (existing?.source?.kind === 'qemu' ? existing.source.granularity : undefined);
    return {
      source: { kind: 'qemu', qmp: qmpPath, guestAgent, ...(granularity ? { granularity } : {}) },
      disks, hardware: machine.hardware, nics: machine.nics,
      describe: disks.map((d) => { const b = found.find((x) => x.node === d.node)!; return `${d.id} node ${b.node} ${b.file} (${b.driver}, ${formatBytes(b.size)})`; }),
    };
  } finally {
    await qmp.close();
  }
}

function chooseDisks(found: BlockDisk[], named: string[] | undefined): BlockDisk[] {
  if (!named || named.length === 0) return found;
  return named.map((n) => {
    const b = found.find((x) => x.node === n || x.device === n);
    if (!b) throw ErrInvalidArgument(`--disk ${n}: not a writable disk of this VM (its disks: ${found.map((x) => `${x.device} node ${x.node}`).join(', ') || 'none'})`);
    return b;
  });
}
