/**
 * The VHDX format driver (MS-VHDX; docs/formats/vhdx.md): probe, open (with log replay and the
 * parent of a differencing disk), create and create-child.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { realpath } from 'node:fs/promises';
import { ErrCorrupt, ErrUnsupported } from '../../errors.js';
import type { CreateChildOptions, CreateOptions, DiskFormatDriver, DiskImage, OpenOptions } from '../types.js';
import { createVhdxFile, DefaultBlockSize } from './create.js';
import { VhdxImage } from './image.js';
import { isVhdx, openLayout } from './open.js';
import { makeLocator, openLinkedParent } from './parent.js';

/** Longest parent chain we follow; a longer one is almost surely a loop through renamed files. */
export const MaxChainDepth = 64;

/** The files being opened on this chain, so a parent loop is refused instead of recursing. */
const chainInProgress = new AsyncLocalStorage<string[]>();

async function openVhdx(path: string, options: OpenOptions): Promise<DiskImage> {
  const real = await realpath(path);
  const chain = chainInProgress.getStore() ?? [];
  if (chain.includes(real)) throw ErrCorrupt(`parent chain loops back to ${path}`);
  if (chain.length >= MaxChainDepth) throw ErrUnsupported(`parent chain is deeper than ${MaxChainDepth}`);
  return chainInProgress.run([...chain, real], async () => {
    const layout = await openLayout(path, options.readOnly ?? false);
    let parent: DiskImage | undefined;
    try {
      if (layout.meta.hasParent) {
        if (!options.openParent) throw ErrUnsupported('differencing disk opened without a way to open its parent');
        const identify = (img: DiskImage) => (img instanceof VhdxImage ? img : undefined);
        parent = await openLinkedParent(path, layout.meta.parentLocator!, options.openParent, identify, options.acceptChangedParent);
        if (parent.logicalSectorSize !== layout.meta.logicalSectorSize) {
          throw ErrCorrupt(`parent has ${parent.logicalSectorSize}-byte sectors, the child ${layout.meta.logicalSectorSize}-byte ones`);
        }
      }
      return new VhdxImage(path, layout, parent, options.readOnly ?? false, options.openParent);
    } catch (err) {
      await parent?.close().catch(() => undefined);
      await layout.file.close();
      throw err;
    }
  });
}

/** A file we just created already has fresh write GUIDs that nothing links to: no header update is due. */
function fresh(img: DiskImage): DiskImage {
  if (img instanceof VhdxImage) img.core.writesBegun = true;
  return img;
}

export const vhdxDriver: DiskFormatDriver = {
  format: 'vhdx',

  probe: (head) => isVhdx(head),

  open: openVhdx,

  async create(path: string, options: CreateOptions): Promise<DiskImage> {
    await createVhdxFile(path, {
      virtualSize: options.virtualSize,
      fixed: options.type === 'fixed',
      blockSize: options.blockSize ?? DefaultBlockSize,
      logicalSectorSize: options.logicalSectorSize ?? 512,
      physicalSectorSize: options.physicalSectorSize ?? 4096,
    });
    return fresh(await openVhdx(path, {}));
  },

  async createChild(path: string, options: CreateChildOptions): Promise<DiskImage> {
    const parent = await options.openParent(options.parentPath);
    try {
      if (!(parent instanceof VhdxImage)) throw ErrUnsupported(`parent ${options.parentPath} is not a VHDX image`);
      await createVhdxFile(path, {
        virtualSize: parent.virtualSize,
        fixed: false,
        blockSize: options.blockSize ?? parent.blockSize,
        logicalSectorSize: parent.logicalSectorSize,
        physicalSectorSize: parent.physicalSectorSize,
        parentLocator: makeLocator(path, options.parentPath, parent.dataWriteGuid),
      });
    } catch (err) {
      await parent.close();
      throw err;
    }
    // The child opens the parent we already hold instead of opening it a second time.
    let handed = false;
    return fresh(await openVhdx(path, {
      openParent: async (p) => {
        if (handed) return options.openParent(p);
        handed = true;
        return parent;
      },
    }));
  },
};
