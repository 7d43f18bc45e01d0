/**
 * mergeChild: commits a differencing child into its parent, as pruning a replica chain does.
 *
 * Only what the child defines itself (extents with layer 'own') is written to the parent: its data,
 * and its zero ranges as parent.zero(). The child keeps its contents and, through setParent, is
 * linked again to the parent it was merged into, so it (and any disk on top of it) still opens and
 * reads the same; the caller may delete it or re-parent its children onto the parent.
 *
 * Idempotent: every write is the same on a rerun, and the child is opened with
 * acceptChangedParent, so a merge interrupted after the parent changed but before the link was
 * renewed is finished by running it again.
 */
import { ErrInvalidArgument } from '../../errors.js';
import { openDisk } from '../index.js';
import { copyExtents, type ProgressFn } from './copy.js';

export async function mergeChild(childPath: string, options: { onProgress?: ProgressFn } = {}): Promise<void> {
  const child = await openDisk(childPath, { acceptChangedParent: true });
  try {
    if (!child.parent) throw ErrInvalidArgument(`${childPath}: has no parent to merge into`);
    const parentPath = child.parent.path;
    const parent = await openDisk(parentPath);
    try {
      if (parent.virtualSize < child.virtualSize) await parent.resize(child.virtualSize);
      await copyExtents(child, parent, child.extents({ layer: 'own' }), { dstIsBlank: false, onProgress: options.onProgress });
      await parent.flush();
    } finally {
      await parent.close();
    }
    await child.setParent?.(parentPath);
  } finally {
    await child.close();
  }
}
