/** Usage metering, quotas and the admission check (service/api/usage.ts; docs/usage.md). */
import { z } from 'zod';
import { Units } from '../../usage/report.js';
import { admissionQuery, usageQuery } from '../usage.js';
import { limitsFields, time } from './common.js';
import type { RouteDoc } from './registry.js';

const tag = 'usage';
const fields = Object.fromEntries(Object.keys(Units).map((k) => [k, z.number()]));
const resources = z.object({ cpus: z.number(), memoryMiB: z.number(), storageBytes: z.number() });

export const usageRoutes: RouteDoc[] = [
  {
    method: 'get', path: '/v1/usage', tag, query: usageQuery, summary: 'metered usage per tenant and UTC day: JSON, or CSV with Accept: text/csv or format=csv (tenant roles: their own tenant)',
    ok: {
      200: {
        description: 'the usage of each tenant and day, and the totals',
        content: {
          'application/json': {
            schema: z.toJSONSchema(z.object({
              from: time(), to: time(), until: time(), units: z.object(Object.fromEntries(Object.keys(Units).map((k) => [k, z.string()]))),
              tenants: z.array(z.object({ tenant: z.string(), days: z.array(z.object({ day: z.string(), ...fields })), total: z.object(fields) })),
            }), { io: 'output', target: 'draft-2020-12' }),
          },
          'text/csv': { schema: { type: 'string' } },
        },
      },
    },
  },
  {
    method: 'get', path: '/v1/tenants/{tenant}/admission', tag, query: admissionQuery,
    summary: 'whether the tenant\'s VMs (every protected one, or vms=a,b) fit its hardware plan and the failover hosts now, placed as placement would',
    ok: {
      200: z.object({
        tenant: z.string(), kind: z.enum(['test', 'planned', 'unplanned']), fits: z.boolean(),
        reservation: z.object({ cpus: z.number().nullable(), memoryMiB: z.number().nullable(), storageBytes: z.number().nullable() }).nullable(),
        inUse: resources, needed: resources,
        vms: z.array(resources.safeExtend({ vm: z.string(), host: z.string().nullable(), problems: z.array(z.string()), warnings: z.array(z.string()) })),
      }),
    },
  },
  {
    method: 'get', path: '/v1/tenants/{tenant}/quotas', tag, summary: 'the tenant\'s quotas, hardware plan, what it uses and the quotas it is over (set with PATCH /v1/tenants/{tenant})',
    ok: {
      200: z.object({
        tenant: z.string(), ...limitsFields,
        used: z.object({ protectedVms: z.number().int(), replicaGb: z.number(), concurrentTestFailovers: z.number().int(), failoverHardware: resources }),
        warnings: z.array(z.string()),
      }),
    },
  },
];
