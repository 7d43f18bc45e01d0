/** Answer schemas more than one resource shares. */
import { z } from 'zod';
import { time } from './registry.js';

export const deleted = (what: string) => z.object({ deleted: z.string() }).describe(`the ${what} is gone`);

/** A tenant's quotas and hardware plan as the API shows them (service/usage/limits.ts presentLimits); null: no limit. */
export const limitsFields = {
  quotas: z.object({ protectedVms: z.number().int().nullable(), replicaGb: z.number().nullable(), concurrentTestFailovers: z.number().int().nullable() }),
  reservation: z.object({ cpus: z.number().int().nullable(), memoryMiB: z.number().int().nullable(), storageGb: z.number().nullable() }),
};
/** The quotas a tenant is over: it goes on replicating, and says so. */
export const quotaWarnings = z.array(z.looseObject({ quota: z.string() }));

/** Fields the single objects and lists of every resource may carry (docs/api.md): an etag, a next page. */
export const etag = { etag: z.string().optional() };
export const page = { nextCursor: z.string().nullable().optional() };

export { time };
