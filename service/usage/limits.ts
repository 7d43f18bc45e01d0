/**
 * A tenant's quotas and hardware reservation as the API takes and shows them (PATCH /v1/tenants/{t},
 * docs/usage.md): storage in GB (10^9 bytes, as replica GB-hours are billed), memory in MiB (as the
 * VM hardware is recorded). null clears a limit (none: unlimited, nothing reserved).
 */
import { z } from 'zod';
import type { TenantLimits } from '../catalog/usage.js';

const count = z.number().int().min(0).max(1_000_000).nullable().optional();
const gb = z.number().min(0).max(1_000_000_000).nullable().optional();

export const quotasSchema = z.strictObject({ protectedVms: count, replicaGb: gb, concurrentTestFailovers: count });
export const reservationSchema = z.strictObject({ cpus: count, memoryMiB: z.number().int().min(0).max(2 ** 40).nullable().optional(), storageGb: gb });

export type QuotasInput = z.infer<typeof quotasSchema>;
export type ReservationInput = z.infer<typeof reservationSchema>;

const Gb = 1e9;
const bytes = (v: number | null | undefined) => (v === undefined || v === null ? v : Math.round(v * Gb));

/** The catalog's limits from the API's quotas and reservation (fields left out stay as they are). */
export function limitsFrom(quotas: QuotasInput | undefined, reservation: ReservationInput | undefined): Partial<TenantLimits> {
  return {
    protectedVms: quotas?.protectedVms, replicaBytes: bytes(quotas?.replicaGb), concurrentTestFailovers: quotas?.concurrentTestFailovers,
    reservedCpus: reservation?.cpus, reservedMemoryMiB: reservation?.memoryMiB, reservedStorageBytes: bytes(reservation?.storageGb),
  };
}

/** The limits as the API shows them. */
export function presentLimits(l: TenantLimits) {
  const gbOf = (v: number | null) => (v === null ? null : v / Gb);
  return {
    quotas: { protectedVms: l.protectedVms, replicaGb: gbOf(l.replicaBytes), concurrentTestFailovers: l.concurrentTestFailovers },
    reservation: { cpus: l.reservedCpus, memoryMiB: l.reservedMemoryMiB, storageGb: gbOf(l.reservedStorageBytes) },
  };
}
