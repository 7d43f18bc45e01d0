/**
 * The VM's registration (agent protocol §5.1) as built from its config and its disks as opened: the
 * protection settings, every disk's size and format, and what `protect` was told of the VM's
 * hardware and NICs (reported for the service's failover configuration). Its digest, kept in
 * progress.json, tells the engine when the service must hear it again.
 */
import { createHash } from 'node:crypto';
import type { DiskImage } from '../../shared/disk/index.js';
import type { VmConfig, VmProgress } from '../state/schema.js';
import type { VmRegistration } from '../transport/types.js';

const FrequencyNames: Record<number, VmRegistration['frequency']> = { 30_000: '30s', 300_000: '5m', 900_000: '15m' };

/**
 * machine: what a live source read of the VM (progress.json's `machine`); what config.json says
 * (protect's options) wins over it, field by field, and config's NIC list replaces it whole.
 */
export function vmRegistration(config: VmConfig, disks: ReadonlyMap<string, Pick<DiskImage, 'virtualSize' | 'format'>>, machine?: VmProgress['machine']): VmRegistration {
  const { diskBus, ...hardware } = { ...machine?.hardware, ...config.hardware };
  const nics = config.nics ?? machine?.nics;
  return {
    displayName: config.name,
    disks: config.disks.map((d) => ({
      id: d.id, virtualSize: disks.get(d.id)!.virtualSize, format: disks.get(d.id)!.format,
      ...(diskBus === undefined ? {} : { bus: diskBus }),
    })),
    frequency: FrequencyNames[config.frequencyMs]!,
    history: config.history,
    appConsistentEvery: config.appConsistentEveryMs === null ? 0 : config.appConsistentEveryMs / 3_600_000,
    compression: config.compression,
    ...(Object.keys(hardware).length > 0 ? { hardware } : {}),
    ...(nics === undefined ? {} : { nics: nics.map((n) => ({ mac: n.mac, ...(n.model === undefined ? {} : { model: n.model }), addresses: n.addresses })) }),
  };
}

/** Equal registrations have equal digests (the fields are always built in one order). */
export function registrationDigest(r: VmRegistration): string {
  return createHash('sha256').update(JSON.stringify(r)).digest('hex');
}
