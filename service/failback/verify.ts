/**
 * Failback's equality check: the agent's digests of every range it received in reverse logs against
 * the same ranges of the hoster's disk, and those ranges against every block the VM wrote at the
 * hoster since its failover (the driver's `lifeboat-fo` bitmap). Both sides started from the
 * failover's point, so when every written block was received and every received range reads the
 * same on both sides, the disks are equal.
 *
 * Input: the stopped VM's monitor (its qemu is alive, vCPUs stopped: QMP can export its overlay nodes
 * `ovN`), the failover's work directory, and the agent's answer per disk in spec order.
 * How: qemu's NBD server on `<workDir>/rv/fb.sock` exports each overlay read-only with a disabled copy
 * of `lifeboat-fo` (qemu exports only a disabled bitmap); our NBD client reads its dirty runs and the
 * ranges' bytes. Everything made here is removed at the end, whatever happened.
 * Output: per disk the ranges and bytes compared, the bytes written at the hoster, and the first
 * difference (a range whose digest differs, or written bytes no range covers), if any.
 */
import { join } from 'node:path';
import { digestRanges } from '../../shared/disk/ops/index.js';
import { NbdClient } from '../../shared/nbd/client.js';
import type { QmpClient } from '../../shared/qmp/client.js';
import { NbdDisk, nbdUri } from '../../shared/qemu/nbd-disk.js';
import { listBitmaps } from '../../shared/qemu/nodes.js';
import type { FailbackApplyResult } from '../../shared/protocol/schemas.js';
import { FailoverBitmap } from '../failover/drivers/qemu.js';
import { ReverseWorkDir } from '../reverse/cycle.js';

const SocketName = 'fb.sock';
const CopyBitmap = 'lifeboat-fb';
const exportId = (node: string) => `lifeboat-fb-${node}`;

export interface DiskEquality {
  disk: string;
  ranges: number;
  bytesCompared: number;
  /** Bytes the VM wrote at the hoster since the failover (null: its bitmap was lost, not checked). */
  writtenBytes: number | null;
  equal: boolean;
  difference: string | null;
}

export async function checkEquality(qmp: QmpClient, workDir: string, disks: readonly FailbackApplyResult['disks'][number][]): Promise<DiskEquality[]> {
  const socket = join(workDir, ReverseWorkDir, SocketName);
  await qmp.execute('nbd-server-stop').catch(() => undefined);
  await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
  const out: DiskEquality[] = [];
  try {
    for (const [i, d] of disks.entries()) out.push(await checkDisk(qmp, socket, `ov${i}`, d));
  } finally {
    for (const i of disks.keys()) {
      await qmp.execute('block-export-del', { id: exportId(`ov${i}`), mode: 'hard' }).catch(() => undefined);
      await qmp.execute('block-dirty-bitmap-remove', { node: `ov${i}`, name: CopyBitmap }).catch(() => undefined);
    }
    await qmp.execute('nbd-server-stop').catch(() => undefined);
  }
  return out;
}

async function checkDisk(qmp: QmpClient, socket: string, node: string, d: FailbackApplyResult['disks'][number]): Promise<DiskEquality> {
  const hasFo = (await listBitmaps(qmp, node)).some((b) => b.name === FailoverBitmap);
  await qmp.execute('block-dirty-bitmap-remove', { node, name: CopyBitmap }).catch(() => undefined);
  if (hasFo) {
    await qmp.execute('transaction', { actions: [
      { type: 'block-dirty-bitmap-add', data: { node, name: CopyBitmap, disabled: true } },
      { type: 'block-dirty-bitmap-merge', data: { node, target: CopyBitmap, bitmaps: [FailoverBitmap] } },
    ] });
  }
  await qmp.execute('block-export-add', { type: 'nbd', id: exportId(node), 'node-name': node, name: node, writable: false, ...(hasFo ? { bitmaps: [CopyBitmap] } : {}) });
  const result: DiskEquality = { disk: d.disk, ranges: d.ranges.length, bytesCompared: d.ranges.reduce((n, r) => n + r.length, 0), writtenBytes: null, equal: true, difference: null };

  // Every block written at the hoster lies in a range the agent received.
  if (hasFo) {
    const nbd = await NbdClient.connect({ socketPath: socket, exportName: node, metaContexts: [`qemu:dirty-bitmap:${CopyBitmap}`] });
    try {
      let written = 0;
      for await (const e of nbd.map(`qemu:dirty-bitmap:${CopyBitmap}`)) {
        if ((e.flags & 1) === 0) continue;
        written += e.length;
        const uncovered = firstUncovered(d.ranges, e.offset, e.length);
        if (uncovered !== undefined && result.equal) {
          result.equal = false;
          result.difference = `the VM wrote at ${uncovered} at the hoster, which no reverse log the agent applied covers`;
        }
      }
      result.writtenBytes = written;
    } finally {
      await nbd.close();
    }
  }

  // Every range the agent received reads the same here.
  const disk = await NbdDisk.open(nbdUri(socket, node));
  try {
    const here = await digestRanges(disk, d.ranges.map((r) => [r.offset, r.length] as const));
    const bad = here.findIndex((h, j) => h.sha256 !== d.ranges[j]!.sha256);
    if (bad >= 0 && result.equal) {
      result.equal = false;
      result.difference = `range ${here[bad]!.offset}+${here[bad]!.length} differs (agent ${d.ranges[bad]!.sha256.slice(0, 16)}…, hoster ${here[bad]!.sha256.slice(0, 16)}…)`;
    }
  } finally {
    await disk.close();
  }
  return result;
}

/** The first offset of [offset, offset+length) that no range covers (ranges ascending, disjoint), or undefined. */
export function firstUncovered(ranges: readonly { offset: number; length: number }[], offset: number, length: number): number | undefined {
  let at = offset;
  const end = offset + length;
  for (const r of ranges) {
    if (r.offset + r.length <= at) continue;
    if (r.offset > at) return at;
    at = r.offset + r.length;
    if (at >= end) return undefined;
  }
  return at < end ? at : undefined;
}
