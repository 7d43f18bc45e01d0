/**
 * Key rotation (docs/security.md, "Rotating keys"), hoster-admin only (manage-access on no tenant):
 *
 *   GET  /v1/keys                              the current keys and those kept from rotations
 *   POST /v1/keys/{kind}/rotations {tenant?, overlap?}   rotate ca, signing, master or tenant
 *   POST /v1/keys/{kind}/retirements {id?, tenant?, force?}  retire what a rotation kept
 *
 * Each is audited (action keys.rotate / keys.retire). The rotation runs in this service process,
 * which holds the catalog (embedded or not) and the key files, and takes its new keys at once;
 * other processes pick them up when they meet a key they do not know (service/context.ts).
 */
import { Hono } from 'hono';
import type { Context } from 'hono';
import { z } from 'zod';
import { ErrInvalidArgument } from '../../shared/errors.js';
import { parseDuration } from '../../shared/units.js';
import { listPreviousKeys, tenantPreviousKeys } from '../catalog/keys.js';
import type { ServiceContext } from '../context.js';
import { check, readJson } from '../http/json.js';
import { certsOutsideCurrentCa, retireCa, rotateCa } from '../keys/ca.js';
import type { InTransaction } from '../keys/master.js';
import { retireMaster, rotateMaster } from '../keys/master.js';
import { retireSigning, rotateSigning } from '../keys/signing.js';
import { retireTenantKey, rotateTenantKey } from '../keys/tenant.js';
import { mayManageAccess } from '../trust/roles.js';
import type { ApiClaims } from '../trust/tokens.js';
import { audited } from './audit.js';

type Env = { Variables: { operator: ApiClaims } };

export const KeyKinds = ['ca', 'signing', 'master', 'tenant'] as const;
export type KeyKind = (typeof KeyKinds)[number];
const kindSchema = z.enum(KeyKinds);
const DayMs = 86_400_000;
const MaxOverlapMs = 3650 * DayMs;

export const rotateSchema = z.strictObject({
  tenant: z.string().min(1).max(64).optional().describe('kind tenant: whose replica key'),
  overlap: z.string().max(16).optional().describe('ca and signing: how long the previous key stays accepted (30m, 12h, 90d …); default: the agent certificate validity (ca), 30d (signing)'),
});
export const retireSchema = z.strictObject({
  id: z.string().min(1).max(128).optional().describe('ca: the previous CA fingerprint; signing and tenant: the previous kid (master: none, the one kept)'),
  tenant: z.string().min(1).max(64).optional(),
  force: z.boolean().default(false).describe('ca: retire although agents have not renewed; tenant: although logs are not merged yet'),
});

function overlapOf(ctx: ServiceContext, kind: KeyKind, overlap: string | undefined): number {
  if (overlap === undefined) return kind === 'ca' ? ctx.config.trust.certValidityDays * DayMs : 30 * DayMs;
  const ms = parseDuration(overlap, 'overlap');
  if (ms < 60_000 || ms > MaxOverlapMs) throw ErrInvalidArgument(`overlap ${overlap} must be between 1m and 3650d`);
  return ms;
}

function only(kind: KeyKind, field: string, value: unknown, allowed: readonly KeyKind[]): void {
  if (value !== undefined && !allowed.includes(kind)) throw ErrInvalidArgument(`${field} does not apply to ${kind} keys`);
}

function need<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw ErrInvalidArgument(`${what} is missing`);
  return value;
}

export async function keyStatus(ctx: ServiceContext) {
  const previous = await listPreviousKeys(ctx.db);
  const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);
  const kept = (kind: 'ca' | 'signing') => previous.filter((p) => p.kind === kind).map((p) => ({
    id: p.id, replacedAt: iso(p.replacedAt), retireAfter: iso(p.retireAfter), retiredAt: iso(p.retiredAt),
    live: p.retiredAt === null && new Date(p.retireAfter) > new Date(),
  }));
  await ctx.master.reload();
  return {
    ca: { current: ctx.ca.fingerprint, previous: kept('ca'), agentsNotRenewed: await certsOutsideCurrentCa(ctx) },
    signing: { current: ctx.signer.kid, previous: kept('signing') },
    master: { current: ctx.master.currentId, previous: ctx.master.previous && !ctx.master.previous.equals(ctx.master.current) ? ctx.master.previousId! : null },
    tenants: (await tenantPreviousKeys(ctx.db)).map((k) => ({ tenant: k.tenant, previous: k.kid, replacedAt: iso(k.replacedAt) })),
  };
}

export function keyRoutes(ctx: ServiceContext): Hono<Env> {
  const r = new Hono<Env>();
  const admin = (c: Context<Env>) => mayManageAccess(c.get('operator'), undefined);
  const kindOf = (c: Context<Env>) => check(kindSchema, c.req.param('kind'), 'kind');
  r.get('/keys', async (c) => {
    admin(c);
    return c.json(await keyStatus(ctx));
  });
  r.post('/keys/:kind/rotations', async (c) => {
    admin(c);
    const kind = kindOf(c);
    const body = await readJson(c, rotateSchema);
    only(kind, 'tenant', body.tenant, ['tenant']);
    only(kind, 'overlap', body.overlap, ['ca', 'signing']);
    const target = kind === 'tenant' ? `tenant ${need(body.tenant, 'tenant')} replica key` : `${kind} key`;
    const inTx: InTransaction = (fn) => audited(ctx, c, { action: 'keys.rotate', target, tenant: body.tenant ?? null }, fn);
    switch (kind) {
      case 'ca': return c.json({ kind, ...(await rotateCa(ctx, inTx, overlapOf(ctx, kind, body.overlap))) }, 201);
      case 'signing': return c.json({ kind, ...(await rotateSigning(ctx, inTx, overlapOf(ctx, kind, body.overlap))) }, 201);
      case 'master': return c.json({ kind, ...(await rotateMaster(ctx, inTx)) }, 201);
      case 'tenant': return c.json({ kind, ...(await inTx((tx) => rotateTenantKey(ctx, tx, body.tenant!))) }, 201);
    }
  });
  r.post('/keys/:kind/retirements', async (c) => {
    admin(c);
    const kind = kindOf(c);
    const body = await readJson(c, retireSchema);
    only(kind, 'tenant', body.tenant, ['tenant']);
    only(kind, 'id', body.id, ['ca', 'signing', 'tenant']);
    const target = kind === 'tenant' ? `tenant ${need(body.tenant, 'tenant')} replica key ${body.id ?? ''}` : `${kind} key ${body.id ?? 'previous'}`;
    const inTx: InTransaction = (fn) => audited(ctx, c, { action: 'keys.retire', target, tenant: body.tenant ?? null }, fn);
    switch (kind) {
      case 'ca': return c.json({ kind, ...(await retireCa(ctx, inTx, need(body.id, 'id (the previous CA fingerprint)'), body.force)) });
      case 'signing': return c.json({ kind, ...(await retireSigning(ctx, inTx, need(body.id, 'id (the previous kid)'))) });
      case 'master': return c.json({ kind, ...(await retireMaster(ctx, inTx)) });
      case 'tenant': return c.json({ kind, ...(await inTx((tx) => retireTenantKey(tx, body.tenant!, need(body.id, 'id (the previous kid)'), body.force))) });
    }
  });
  return r;
}
