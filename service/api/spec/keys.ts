/** Key rotation (service/api/keys.ts, docs/security.md). */
import { z } from 'zod';
import { KeyKinds, retireSchema, rotateSchema } from '../keys.js';
import { time } from './common.js';
import type { RouteDoc } from './registry.js';

const tag = 'keys';
const kind = z.enum(KeyKinds);
const kept = z.object({ id: z.string(), replacedAt: time(), retireAfter: time(), retiredAt: time().nullable(), live: z.boolean() });
const status = z.object({
  ca: z.object({ current: z.string(), previous: z.array(kept), agentsNotRenewed: z.number() }),
  signing: z.object({ current: z.string(), previous: z.array(kept) }),
  master: z.object({ current: z.string(), previous: z.string().nullable() }),
  tenants: z.array(z.object({ tenant: z.string(), previous: z.string(), replacedAt: time() })),
});

export const keyRoutes: RouteDoc[] = [
  { method: 'get', path: '/v1/keys', tag, summary: 'the service\'s current keys and those kept from rotations (hoster-admin)', ok: { 200: status } },
  {
    method: 'post', path: '/v1/keys/{kind}/rotations', tag, params: { kind }, body: rotateSchema, errors: [409],
    summary: 'rotate a key without downtime: ca, signing, master, or a tenant\'s replica key (hoster-admin)',
    ok: { 201: z.looseObject({ kind, previous: z.string(), current: z.string() }) },
  },
  {
    method: 'post', path: '/v1/keys/{kind}/retirements', tag, params: { kind }, body: retireSchema, errors: [409],
    summary: 'retire what a rotation kept: the previous CA, signing key, master key or tenant replica key (hoster-admin)',
    ok: { 200: z.looseObject({ kind, retired: z.string() }) },
  },
];
