/** Request bodies of the operator API, shared by the routes and the OpenAPI document. */
import { z } from 'zod';
import { quotasSchema, reservationSchema } from '../usage/limits.js';
import { listQuery, timeRange } from './lists.js';

export const tenantCreateSchema = z.strictObject({ name: z.string().min(1).max(64) });
/** PATCH /v1/tenants/{t}: the settings given change; null puts one back to the service's default. */
export const tenantSettingsSchema = z.strictObject({
  testFailoverMaxHours: z.number().min(0.01).max(720).nullable().optional(),
  // Quotas and the hardware plan's reservation (docs/usage.md); each field given changes, null clears it.
  quotas: quotasSchema.optional(),
  reservation: reservationSchema.optional(),
});
export const allowSchema = z.strictObject({ pattern: z.string().min(1).max(253), storage: z.string().min(1).max(4096).optional(), trustGroup: z.string().min(1).max(64).optional() });
export const tokenSchema = z.strictObject({ ttl: z.string().min(1).max(16).optional() });
export const revokeSchema = z.strictObject({ server: z.string().min(1).max(253) });
export const vmListQuery = listQuery({ tenant: z.string().min(1).max(64).optional(), state: z.string().max(32).optional(), health: z.string().max(32).optional() });
export const tenantListQuery = listQuery({});
export const pointListQuery = listQuery(timeRange);
