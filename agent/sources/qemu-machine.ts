/**
 * What a running QEMU says about itself over QMP, for `protect --source qemu` and the engine: its
 * disks from the block graph (query-block: every writable, non-removable drive with its format node),
 * and its configuration as the failover side needs it (vCPUs, memory, firmware, NICs with their MACs
 * and models, the guest's addresses when qemu-guest-agent answers).
 *
 * Input: a connected QmpClient (and optionally a guest agent socket). Output: plain values in the
 * agent's config shapes. Failure: QMP errors as QmpError; a guest agent that does not answer is no
 * addresses, not an error.
 */
import type { GuestInterface } from '../../shared/qmp/client.js';
import { GuestAgentClient, type QmpClient } from '../../shared/qmp/client.js';
import type { NicConfig } from '../state/schema.js';
import type { MachineConfig } from './live-view.js';

export interface BlockDisk {
  /** The drive's id (-drive id=), or its qdev path for -blockdev disks. */
  device: string;
  /** The format node the bitmaps and views go on. */
  node: string;
  /** The image file as qemu names it. */
  file: string;
  driver: string;
  size: number;
}

interface QueryBlock {
  device: string;
  qdev?: string;
  removable: boolean;
  inserted?: { 'node-name': string; file: string; drv: string; ro: boolean; image: { 'virtual-size': number } };
}

/** The VM's writable, non-removable disks in the order qemu lists them (CD-ROMs, pflash and read-only drives left out). */
export async function blockDisks(qmp: QmpClient): Promise<BlockDisk[]> {
  const devices = await qmp.execute<QueryBlock[]>('query-block');
  return devices
    .filter((d) => d.inserted && !d.inserted.ro && !d.removable && !d.device.startsWith('pflash'))
    .map((d) => ({
      device: d.device || d.qdev || d.inserted!['node-name'], node: d.inserted!['node-name'], file: d.inserted!.file,
      driver: d.inserted!.drv, size: d.inserted!.image['virtual-size'],
    }));
}

const ModelByDriver: Record<string, NicConfig['model']> = { 'virtio-net-pci': 'virtio', 'virtio-net': 'virtio', e1000: 'e1000', 'e1000-82545em': 'e1000', rtl8139: 'rtl8139' };

/** The NICs from HMP `info network` (`net0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56`). */
export function parseInfoNetwork(text: string): Array<{ mac: string; model: NicConfig['model'] | undefined }> {
  const out: Array<{ mac: string; model: NicConfig['model'] | undefined }> = [];
  for (const line of text.split(/\r?\n/)) {
    if (!/type=nic/.test(line)) continue;
    const mac = /macaddr=([0-9a-f:]{17})/i.exec(line)?.[1];
    if (!mac) continue;
    const model = /model=([\w-]+)/.exec(line)?.[1];
    out.push({ mac: mac.toLowerCase(), model: model ? ModelByDriver[model] : undefined });
  }
  return out;
}

export type { MachineConfig } from './live-view.js';

/** vCPUs, memory, firmware and NICs of the running VM; the guest's addresses per NIC when its agent answers. */
export async function machineConfig(qmp: QmpClient, guestAgentSocket?: string | null): Promise<MachineConfig> {
  const cpus = (await qmp.execute<unknown[]>('query-cpus-fast')).length;
  const memory = await qmp.execute<{ 'base-memory': number }>('query-memory-size-summary');
  const blocks = await qmp.execute<QueryBlock[]>('query-block');
  const firmware = blocks.some((b) => b.device.startsWith('pflash')) ? 'uefi' : 'bios';
  const nics = parseInfoNetwork(await qmp.hmp('info network'));
  const addresses = guestAgentSocket ? await guestAddresses(guestAgentSocket) : new Map<string, string[]>();
  return {
    hardware: { cpus, memoryMiB: Math.floor(memory['base-memory'] / (1 << 20)), firmware },
    nics: nics.map((n) => ({ mac: n.mac, ...(n.model ? { model: n.model } : {}), addresses: addresses.get(n.mac) ?? [] })),
  };
}

/** The guest's global addresses by MAC (ADDR/PREFIX), from guest-network-get-interfaces; none when the agent does not answer. */
export async function guestAddresses(socket: string): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  let ifaces: GuestInterface[];
  try {
    const ga = await GuestAgentClient.connect(socket, { timeoutMs: 3000 });
    try { ifaces = await ga.networkInterfaces({ timeoutMs: 5000 }); } finally { ga.close(); }
  } catch {
    return out;
  }
  for (const i of ifaces) {
    const mac = i['hardware-address']?.toLowerCase();
    if (!mac || mac === '00:00:00:00:00:00') continue;
    const addrs = (i['ip-addresses'] ?? [])
      .filter((a) => !(a['ip-address-type'] === 'ipv6' && a['ip-address'].toLowerCase().startsWith('fe80')))
      .map((a) => `${a['ip-address']}/${a.prefix}`);
    out.set(mac, [...(out.get(mac) ?? []), ...addrs]);
  }
  return out;
}
