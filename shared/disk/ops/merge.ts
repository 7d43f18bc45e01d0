/**
 * mergeChild: commits a differencing child into its parent, as pruning a replica chain does.
 *
 * Only what the child defines itself (extents with layer 'own') is written to the parent: its data,
 * and its zero ranges as parent.zero(). The child is left unchanged and still reads the same, so a
 * merge interrupted at any point is completed by running it again (every write is idempotent);
 * the caller deletes the child once mergeChild returns.
 */
import { ErrInvalidArgument } from '../../errors.js';
import { openDisk } from '../index.js';
import { copyExtents, type ProgressFn } from './copy.js';

export async function mergeChild(childPath: string, options: { onProgress?: ProgressFn } = {}): Promise<void> {
  const child = await openDisk(childPath, { readOnly: true });
  try {
    if (!child.parent) throw ErrInvalidArgument(`${childPath}: has no parent to merge into`);
    const parent = await openDisk(child.parent.path);
    try {
      if (parent.virtualSize < child.virtualSize) await parent.resize(child.virtualSize);
      await copyExtents(child, parent, child.extents({ layer: 'own' }), { dstIsBlank: false, onProgress: options.onProgress });
      await parent.flush();
    } finally {
      await parent.close();
    }
  } finally {
    await child.close();
  }
}
