/**
 * libvirt's XML for the libvirt source, read and written with fast-xml-parser (never by string
 * pasting: every value is escaped by the builder): the domain as `virsh dumpxml` describes it (its
 * disks, vCPUs, memory, firmware, NICs, a guest agent channel), a checkpoint's disks
 * (`checkpoint-dumpxml`), and the documents `backup-begin` takes (a pull-mode backup and the
 * checkpoint created with it).
 *
 * Input: XML text from virsh, or plain values. Output: plain values, XML text. Failure: a document
 * that is not a domain (or not a checkpoint) is a LifeboatError 'corrupt' naming what was expected.
 */
import { XMLBuilder, XMLParser } from 'fast-xml-parser';
import { ErrCorrupt } from '../../shared/errors.js';
import { DiskBuses, NicModels } from '../../shared/protocol/vm-config.js';
import type { HardwareConfig, NicConfig } from '../state/schema.js';

const Attr = '@_';
const parser = new XMLParser({
  ignoreAttributes: false, attributeNamePrefix: Attr, parseTagValue: false, parseAttributeValue: false,
  isArray: (name) => ['disk', 'interface', 'channel', 'loader'].includes(name),
});
const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: Attr, suppressEmptyNode: true });

type Node = Record<string, unknown>;
const obj = (v: unknown): Node => (v && typeof v === 'object' ? v as Node : {});
const list = (v: unknown): Node[] => (Array.isArray(v) ? v.map(obj) : v === undefined ? [] : [obj(v)]);
const attr = (n: Node, name: string): string | undefined => { const v = n[`${Attr}${name}`]; return typeof v === 'string' ? v : undefined; };
const text = (v: unknown): string | undefined => (typeof v === 'string' ? v : typeof obj(v)['#text'] === 'string' ? obj(v)['#text'] as string : undefined);

/** A disk of the domain as dumpxml shows it. */
export interface DomainDisk {
  /** The target device (vda, sdb): the name backups and checkpoints use. */
  target: string;
  /** 'disk', 'cdrom', 'floppy', 'lun'. */
  device: string;
  /** The image file (or block device, or volume) as libvirt names it; '' when it has none (an empty CD-ROM). */
  file: string;
  /** The format qemu reads it with (qcow2, raw); '' when not said. */
  format: string;
  bus: string;
  readOnly: boolean;
}

export interface DomainInfo {
  name: string;
  disks: DomainDisk[];
  hardware: HardwareConfig;
  nics: NicConfig[];
  /** The domain has a qemu-guest-agent channel (org.qemu.guest_agent.0). */
  guestAgent: boolean;
}

const UnitBytes: Record<string, number> = {
  b: 1, bytes: 1, k: 1024, kib: 1024, kb: 1000, m: 1 << 20, mib: 1 << 20, mb: 1e6, g: 1 << 30, gib: 1 << 30, gb: 1e9, t: 2 ** 40, tib: 2 ** 40, tb: 1e12,
};
const ModelByType: Record<string, NicConfig['model']> = { virtio: 'virtio', e1000: 'e1000', e1000e: 'e1000', rtl8139: 'rtl8139' };

/** The domain as `virsh dumpxml` describes it. */
export function parseDomain(xml: string): DomainInfo {
  const domain = obj(parser.parse(xml).domain);
  const name = text(domain.name);
  if (!name) throw ErrCorrupt('virsh dumpxml: not a libvirt domain document');
  const devices = obj(domain.devices);
  const disks: DomainDisk[] = list(devices.disk).map((d) => {
    const source = obj(d.source);
    return {
      target: attr(obj(d.target), 'dev') ?? '', device: attr(d, 'device') ?? 'disk',
      file: attr(source, 'file') ?? attr(source, 'dev') ?? attr(source, 'volume') ?? attr(source, 'name') ?? '',
      format: attr(obj(d.driver), 'type') ?? '', bus: attr(obj(d.target), 'bus') ?? '', readOnly: d.readonly !== undefined,
    };
  }).filter((d) => d.target !== '');
  const memory = obj(domain.memory);
  const memoryBytes = Number(text(domain.memory)) * (UnitBytes[(attr(memory, 'unit') ?? 'KiB').toLowerCase()] ?? 1024);
  const cpus = Number(text(domain.vcpu));
  const os = obj(domain.os);
  const uefi = attr(os, 'firmware') === 'efi' || list(os.loader).some((l) => attr(l, 'type') === 'pflash');
  const buses = new Set(disks.filter((d) => d.device === 'disk').map((d) => d.bus));
  const bus = buses.size === 1 ? [...buses][0] : undefined;
  const hardware: HardwareConfig = {
    firmware: uefi ? 'uefi' : 'bios',
    ...(Number.isInteger(cpus) && cpus > 0 ? { cpus } : {}),
    ...(memoryBytes >= 1 << 20 ? { memoryMiB: Math.floor(memoryBytes / (1 << 20)) } : {}),
    ...(bus && (DiskBuses as readonly string[]).includes(bus) ? { diskBus: bus as HardwareConfig['diskBus'] } : {}),
  };
  const nics: NicConfig[] = list(devices.interface).flatMap((i) => {
    const mac = attr(obj(i.mac), 'address')?.toLowerCase();
    if (!mac) return [];
    const model = ModelByType[attr(obj(i.model), 'type') ?? ''];
    return [{ mac, ...(model && (NicModels as readonly string[]).includes(model) ? { model } : {}), addresses: [] }];
  });
  const guestAgent = list(devices.channel).some((c) => attr(obj(c.target), 'name') === 'org.qemu.guest_agent.0');
  return { name, disks, hardware, nics, guestAgent };
}

/** The disks a checkpoint tracks with a bitmap (`checkpoint-dumpxml --no-domain`). */
export function checkpointDisks(xml: string): string[] {
  const cp = obj(parser.parse(xml).domaincheckpoint);
  if (!text(cp.name)) throw ErrCorrupt('virsh checkpoint-dumpxml: not a libvirt checkpoint document');
  return list(obj(cp.disks).disk).filter((d) => attr(d, 'checkpoint') === 'bitmap').map((d) => attr(d, 'name') ?? '').filter(Boolean);
}

/** A checkpoint with a bitmap on each of `tracked` and none on the domain's other disks (`others`). */
export function checkpointXml(name: string, tracked: string[], others: string[]): string {
  return builder.build({
    domaincheckpoint: {
      name,
      disks: { disk: [...tracked.map((t) => ({ [`${Attr}name`]: t, [`${Attr}checkpoint`]: 'bitmap' })), ...others.map((t) => ({ [`${Attr}name`]: t, [`${Attr}checkpoint`]: 'no' }))] },
    },
  }) as string;
}

export interface BackupDisk {
  target: string;
  /** The checkpoint to read changes since (incremental); undefined: the whole disk (full). */
  incremental: string | undefined;
  /** The scratch qcow2 libvirt creates for the copy-before-write of this disk's view. */
  scratch: string;
}

/** A pull-mode backup: an NBD server on a unix socket exporting each disk, the others left out. */
export function backupXml(socket: string, disks: BackupDisk[], others: string[]): string {
  return builder.build({
    domainbackup: {
      [`${Attr}mode`]: 'pull',
      server: { [`${Attr}transport`]: 'unix', [`${Attr}socket`]: socket },
      disks: {
        disk: [
          ...disks.map((d) => ({
            [`${Attr}name`]: d.target, [`${Attr}backup`]: 'yes', [`${Attr}type`]: 'file',
            [`${Attr}backupmode`]: d.incremental ? 'incremental' : 'full', ...(d.incremental ? { [`${Attr}incremental`]: d.incremental } : {}),
            scratch: { [`${Attr}file`]: d.scratch }, driver: { [`${Attr}type`]: 'qcow2' },
          })),
          ...others.map((t) => ({ [`${Attr}name`]: t, [`${Attr}backup`]: 'no' })),
        ],
      },
    },
  }) as string;
}

/** The unix socket of a running backup job's NBD server (`backup-dumpxml`); undefined when it has none. */
export function backupSocket(xml: string): string | undefined {
  return attr(obj(obj(parser.parse(xml).domainbackup).server), 'socket');
}
