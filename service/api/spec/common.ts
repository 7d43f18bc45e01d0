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

/** The etag of one object (docs/api.md, ETags): the same string as its answer's ETag header. */
export const etag = { etag: z.string().regex(/^"[A-Za-z0-9_-]{22}"$/).describe('the object\'s strong etag (as the ETag header); send it back in If-Match or If-None-Match') };
/** Every list's answer: the cursor of the next page (docs/api.md, Lists). */
export { nextCursorField as page } from '../lists.js';

export { time };
