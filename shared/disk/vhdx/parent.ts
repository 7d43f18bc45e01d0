/**
 * Parent locators of differencing disks (MS-VHDX §2.6.2.6.1). We write the keys Hyper-V and qemu
 * know: parent_linkage (the parent's DataWriteGuid), relative_path (Windows style, ".\x.vhdx") and
 * absolute_win32_path (the parent's absolute path as this host spells it). Reading, a path is tried
 * relative to the child's directory first, then as absolute; backslashes become slashes.
 */
import { stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { ErrCorrupt, ErrNotFound, ErrUnsupported } from '../../errors.js';
import type { DiskImage } from '../types.js';
import { normGuid } from './format.js';

export function makeLocator(childPath: string, parentPath: string, parentDataWriteGuid: string): Map<string, string> {
  const abs = resolve(parentPath);
  let rel = relative(dirname(resolve(childPath)), abs).split('/').join('\\');
  if (!rel.startsWith('..')) rel = `.\\${rel}`;
  return new Map([
    ['parent_linkage', `{${parentDataWriteGuid}}`],
    ['relative_path', rel],
    ['absolute_win32_path', abs],
  ]);
}

/** Candidate paths for the parent, in the order they are tried. */
export function parentCandidates(childPath: string, locator: Map<string, string>): string[] {
  const out: string[] = [];
  const rel = locator.get('relative_path');
  if (rel) out.push(join(dirname(resolve(childPath)), toPosix(rel)));
  for (const key of ['absolute_win32_path', 'volume_path']) {
    const v = locator.get(key);
    if (!v) continue;
    const p = toPosix(v);
    // Drive letters and \\?\Volume{…} paths name another machine's namespace; only POSIX paths resolve here.
    if (isAbsolute(p) && !/^\/\/\?\//.test(p)) out.push(p);
  }
  return [...new Set(out)];
}

function toPosix(p: string): string {
  return p.replace(/\\/g, '/');
}

/** What a differencing disk needs to know of the image it opened as its parent. */
export interface ParentIdentity {
  dataWriteGuid: string;
}

/**
 * Finds and opens the parent, and checks that it is the image the locator links to (its
 * DataWriteGuid equals parent_linkage or parent_linkage2). With acceptChanged the identity check
 * is skipped: only for finishing an interrupted merge, which then rewrites the link.
 */
export async function openLinkedParent(
  childPath: string,
  locator: Map<string, string>,
  openParent: (path: string) => Promise<DiskImage>,
  identify: (img: DiskImage) => ParentIdentity | undefined,
  acceptChanged = false,
): Promise<DiskImage> {
  const linkage = locator.get('parent_linkage');
  if (!linkage) throw ErrCorrupt('parent locator has no parent_linkage');
  const accepted = [linkage, locator.get('parent_linkage2')].filter((x): x is string => x !== undefined).map(normGuid);
  const candidates = parentCandidates(childPath, locator);
  const tried: string[] = [];
  for (const path of candidates) {
    const st = await stat(path).catch(() => undefined);
    // A locator may name anything: a FIFO or a terminal would block the open (or the first read) for
    // ever, so only files and block devices are opened as parents.
    if (!st || !(st.isFile() || st.isBlockDevice())) {
      tried.push(st ? `${path} (not a file)` : path);
      continue;
    }
    const parent = await openParent(path);
    const id = identify(parent);
    if (!id) {
      await parent.close();
      throw ErrUnsupported(`parent ${path} is not a VHDX image`);
    }
    if (!acceptChanged && !accepted.includes(normGuid(id.dataWriteGuid))) {
      await parent.close();
      throw ErrCorrupt(`parent ${path} does not match its locator (parent_linkage ${linkage})`);
    }
    return parent;
  }
  throw ErrNotFound(`parent not found (tried ${tried.join(', ') || 'no usable locator path'})`);
}
