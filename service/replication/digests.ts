/**
 * Block digests of a replica for resynchronization (agent protocol §9): SHA-256 of each block of
 * [offset, offset+length) as the replica reads through its chain; blocks that read as all zeros are
 * omitted. Reads one block at a time, so memory is one block however large the range.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { openDisk } from '../../shared/disk/index.js';
import { ErrInvalidArgument } from '../../shared/errors.js';
import type { DiskRow } from '../catalog/vms.js';
import { ErrConflict } from '../errors.js';
import { readState } from './replica.js';

export const MaxDigestBlocks = 65_536;

export async function blockDigests(disk: DiskRow, q: { blockSize: number; offset: number; length: number }) {
  if (!disk.baseComplete) throw ErrConflict('base_incomplete', `disk ${disk.id} has no complete base yet`);
  if (q.offset % q.blockSize !== 0) throw ErrInvalidArgument('offset must be a multiple of blockSize');
  const state = await readState(disk.replicaDir);
  const image = await openDisk(join(disk.replicaDir, state.layers.at(-1)!), { readOnly: true });
  try {
    const end = Math.min(image.virtualSize, q.offset + q.length, q.offset + MaxDigestBlocks * q.blockSize);
    const blocks: { index: number; sha256: string }[] = [];
    const buf = Buffer.alloc(q.blockSize);
    const zeros = Buffer.alloc(q.blockSize);
    for (let off = q.offset; off < end; off += q.blockSize) {
      const view = buf.subarray(0, Math.min(q.blockSize, image.virtualSize - off));
      await image.read(off, view);
      if (view.equals(zeros.subarray(0, view.length))) continue;
      blocks.push({ index: off / q.blockSize, sha256: createHash('sha256').update(view).digest('hex') });
    }
    return { generation: state.generation, appliedSequence: state.appliedSequence, virtualSize: image.virtualSize, blockSize: q.blockSize, offset: q.offset, length: Math.max(0, end - q.offset), algorithm: 'sha256', blocks };
  } finally {
    await image.close();
  }
}
