/**
 * Reading a running qemu's block graph over QMP for the qemu source: a node's size and its dirty
 * bitmaps (query-named-block-nodes, flat). Input: a connected QmpClient and a node name. Output:
 * plain values. Failure: a node qemu does not have is a LifeboatError 'not_found' naming it and the
 * nodes there are.
 */
import { LifeboatError } from '../errors.js';
import type { QmpClient } from '../qmp/client.js';

export interface BitmapInfo {
  name: string;
  /** True while it records writes (enabled). */
  recording: boolean;
  persistent: boolean;
  granularity: number;
  /** Dirty bytes. */
  count: number;
}

interface NamedNode {
  'node-name': string;
  drv: string;
  image: { 'virtual-size': number };
  'dirty-bitmaps'?: BitmapInfo[];
}

async function findNode(qmp: QmpClient, node: string): Promise<NamedNode> {
  const nodes = await qmp.execute<NamedNode[]>('query-named-block-nodes', { flat: true });
  const found = nodes.find((n) => n['node-name'] === node);
  if (!found) {
    const names = nodes.map((n) => n['node-name']).filter((n) => !n.startsWith('#')).join(', ');
    throw new LifeboatError('not_found', `qemu has no block node '${node}' (nodes: ${names || 'none'})`);
  }
  return found;
}

/** The node's format driver and virtual size. */
export async function nodeInfo(qmp: QmpClient, node: string): Promise<{ driver: string; size: number }> {
  const n = await findNode(qmp, node);
  return { driver: n.drv, size: n.image['virtual-size'] };
}

/** Every dirty bitmap on the node. */
export async function listBitmaps(qmp: QmpClient, node: string): Promise<BitmapInfo[]> {
  return ((await findNode(qmp, node))['dirty-bitmaps'] ?? []).map((b) => ({
    name: b.name, recording: b.recording, persistent: b.persistent, granularity: b.granularity, count: b.count,
  }));
}
