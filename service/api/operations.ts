/**
 * Operator operations behind the API (and so the CLI): tenants, authorization entries, enrollment
 * tokens, revocation, VM listing and recovery points. Each validates its input and speaks the catalog.
 */
import type { Queryable } from '../catalog/db.js';
import { resolve } from 'node:path';
import { LifeboatError } from '../../shared/errors.js';
import { parseDuration } from '../../shared/units.js';
import { revokeServer } from '../catalog/servers.js';
import type { TenantRow } from '../catalog/tenants.js';
import { getTenant, insertTenant, listAuthorizations, listTenants, requireTenant, setTenantSettings, upsertAuthorization } from '../catalog/tenants.js';
import { getTenantLimits, setTenantLimits } from '../catalog/usage.js';
import { getVm, listVms } from '../catalog/vms.js';
import type { QuotasInput, ReservationInput } from '../usage/limits.js';
import { limitsFrom, presentLimits } from '../usage/limits.js';
import { quotaWarnings } from '../usage/quotas.js';
import type { ServiceContext } from '../context.js';
import { idPattern } from '../http/json.js';
import { listFailovers } from '../catalog/failovers.js';
import { pinnedStorage } from '../workers/pinned-storage.js';
import { vmStatus } from '../replication/status.js';
import { normalizePattern, normalizeServerName } from '../trust/patterns.js';
import { newReplicaKeyPair, signEnrollToken } from '../trust/tokens.js';

export const DefaultTokenTtl = '1h';
export const MaxTokenTtlMs = 7 * 86_400_000;
export const DefaultTrustGroup = 'default';

export function checkTenantName(name: string): string {
  if (!idPattern.test(name)) throw new LifeboatError('invalid_argument', `tenant name ${JSON.stringify(name.slice(0, 80))} must be 1 to 64 of [a-z0-9_-], starting with a letter or digit`);
  return name;
}

/** Creates a tenant with its replica key pair; `db` is the caller's transaction when it audits the change. */
export async function createTenant(ctx: ServiceContext, name: string, db: Queryable = ctx.db) {
  checkTenantName(name);
  const keys = await newReplicaKeyPair(ctx.master);
  const t = await insertTenant(db, { name, replicaPublicJwk: keys.publicJwk, replicaPrivateWrapped: keys.wrappedPrivate });
  return { name: t.name, createdAt: t.createdAt.toISOString(), replicaKey: t.replicaPublicJwk };
}

export async function tenantList(ctx: ServiceContext) {
  return Promise.all((await listTenants(ctx.db)).map((t) => presentTenant(ctx, t)));
}

/** A tenant as the API shows it: settings, quotas, hardware plan, authorization entries (its etag's representation). */
export async function presentTenant(ctx: ServiceContext, t: TenantRow) {
  return {
    name: t.name,
    createdAt: t.createdAt.toISOString(),
    ...tenantSettings(ctx, t),
    ...presentLimits((await getTenantLimits(ctx.db, t.name))!),
    authorizations: (await listAuthorizations(ctx.db, t.name)).map((a) => ({ pattern: a.pattern, storage: a.storage, trustGroup: a.trustGroup })),
  };
}

/** The tenant's representation, or undefined when there is none of that name. */
export async function tenantOf(ctx: ServiceContext, name: string) {
  const t = await getTenant(ctx.db, name);
  return t && presentTenant(ctx, t);
}

/** A tenant's settings as the API shows them: the value in force, and whether it is the default. */
function tenantSettings(ctx: ServiceContext, t: Pick<TenantRow, 'testFailoverMaxHours'>) {
  return { testFailoverMaxHours: t.testFailoverMaxHours ?? ctx.config.failover.testMaxHours, testFailoverMaxHoursIsDefault: t.testFailoverMaxHours === null };
}

export async function setTenant(ctx: ServiceContext, name: string, settings: { testFailoverMaxHours?: number | null | undefined; quotas?: QuotasInput | undefined; reservation?: ReservationInput | undefined }) {
  checkTenantName(name);
  const found = await ctx.db.transaction(async (tx) => (await setTenantSettings(tx, name, settings.testFailoverMaxHours === undefined ? {} : { testFailoverMaxHours: settings.testFailoverMaxHours }))
    && setTenantLimits(tx, name, limitsFrom(settings.quotas, settings.reservation)));
  if (!found) throw new LifeboatError('not_found', `no tenant ${name}`);
  // A quota lowered below what the tenant uses refuses only what is new; what replicates goes on, with a warning.
  const limits = (await getTenantLimits(ctx.db, name))!;
  return { tenant: await presentTenant(ctx, await requireTenant(ctx.db, name)), warnings: await quotaWarnings(ctx.db, name, limits) };
}

export async function allow(ctx: ServiceContext, tenant: string, a: { pattern: string; storage?: string | undefined; trustGroup?: string | undefined }) {
  await requireTenant(ctx.db, checkTenantName(tenant));
  const trustGroup = a.trustGroup ?? DefaultTrustGroup;
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(trustGroup)) throw new LifeboatError('invalid_argument', `trust group ${JSON.stringify(trustGroup.slice(0, 80))} must be 1 to 64 of [A-Za-z0-9._-]`);
  const storage = resolve(a.storage ?? ctx.config.replicaRoot);
  const row = await upsertAuthorization(ctx.db, { tenant, pattern: normalizePattern(a.pattern), storage, trustGroup });
  return { tenant, pattern: row.pattern, storage: row.storage, trustGroup: row.trustGroup };
}

export async function createEnrollToken(ctx: ServiceContext, tenant: string, ttl = DefaultTokenTtl) {
  await requireTenant(ctx.db, checkTenantName(tenant));
  const ms = parseDuration(ttl, 'ttl');
  if (ms < 1000 || ms > MaxTokenTtlMs) throw new LifeboatError('invalid_argument', `ttl ${ttl} must be between 1s and 7d`);
  const seconds = Math.ceil(ms / 1000);
  const token = await signEnrollToken(ctx.signer, { tenant, caFingerprint: ctx.ca.fingerprint, endpoint: ctx.config.agentEndpoint.publicUrl, ttlSeconds: seconds });
  return { tenant, token, expiresAt: new Date(Date.now() + seconds * 1000).toISOString(), endpoint: ctx.config.agentEndpoint.publicUrl, caFingerprint: ctx.ca.fingerprint };
}

export async function revoke(ctx: ServiceContext, tenant: string, fqdn: string) {
  await requireTenant(ctx.db, checkTenantName(tenant));
  const name = normalizeServerName(fqdn);
  const revoked = await revokeServer(ctx.db, tenant, name);
  if (revoked === 0) throw new LifeboatError('not_found', `tenant ${tenant} has no live certificate for ${name}`);
  return { tenant, server: name, revokedCertificates: revoked };
}

export async function vmList(ctx: ServiceContext, tenant?: string) {
  if (tenant !== undefined) await requireTenant(ctx.db, checkTenantName(tenant));
  const vms = await listVms(ctx.db, tenant);
  const live = await listFailovers(ctx.db, { tenant, active: true });
  const pinned = new Map((await pinnedStorage(ctx, tenant === undefined ? {} : { tenant })).map((p) => [`${p.tenant}/${p.vm}`, p]));
  // The quotas each tenant is over: its VMs replicate on, and their status says so.
  const over = new Map(await Promise.all([...new Set(vms.map((v) => v.tenant))].map(async (t) => [t, await quotaWarnings(ctx.db, t)] as const)));
  return Promise.all(vms.map(async (v) => {
    const s = await vmStatus(ctx.db, v);
    const mine = live.filter((f) => f.tenant === v.tenant && f.vm === v.name);
    // A live real failover makes the hoster's VM the primary: forward logs are held (docs/failover.md).
    const real = mine.find((f) => f.kind !== 'test');
    const p = pinned.get(`${v.tenant}/${v.name}`);
    return {
      tenant: v.tenant, name: v.name, state: real ? `failed over (${real.kind}, ${real.state})` : s.state, health: s.health, lastAppliedAt: s.lastAppliedAt, pendingLogs: s.pendingLogs,
      failovers: mine.map((f) => ({ id: f.id, kind: f.kind, state: f.state })),
      pinned: p ? { points: p.pins, heldPoints: p.heldPoints, bytes: p.bytes } : null,
      disks: s.disks,
      quotaWarnings: over.get(v.tenant) ?? [],
    };
  }));
}

/**
 * Recovery points of a VM; the latest applied state is always one (id 'latest'). Each names its VM
 * cycle and the agent's capture time of it (null for points made from version-1 logs; for 'latest',
 * when its disks are not all at one cycle).
 */
export async function points(ctx: ServiceContext, tenant: string, vm: string) {
  const v = await getVm(ctx.db, checkTenantName(tenant), vm);
  if (!v) {
    await requireTenant(ctx.db, tenant); // "no tenant X", as vm list words it
    throw new LifeboatError('not_found', `tenant ${tenant} has no VM ${vm}`);
  }
  const rows = await ctx.db.query<{ id: number; createdAt: Date; consistency: string; cycle: number | null; capturedAt: Date | null }>(
    'SELECT id, created_at AS "createdAt", consistency, cycle, captured_at AS "capturedAt" FROM recovery_points WHERE tenant = $1 AND vm = $2 ORDER BY created_at', [tenant, vm]);
  const s = await vmStatus(ctx.db, v);
  const list = rows.map((r) => ({ id: String(r.id), createdAt: r.createdAt.toISOString(), consistency: r.consistency, latest: false, cycle: r.cycle, capturedAt: r.capturedAt?.toISOString() ?? null }));
  if (s.lastAppliedAt !== null) list.push({ id: 'latest', createdAt: s.lastAppliedAt, consistency: 'crash', latest: true, ...(await latestCycle(ctx, tenant, vm)) });
  return list;
}

/** The cycle every disk of the VM is at, with its capture time; nulls when they differ or have none. */
async function latestCycle(ctx: ServiceContext, tenant: string, vm: string): Promise<{ cycle: number | null; capturedAt: string | null }> {
  const rows = await ctx.db.query<{ cycle: number | null; capturedAt: Date | null }>(
    `SELECT min(d.applied_cycle) AS cycle, (SELECT min(captured_at) FROM logs l WHERE l.tenant = $1 AND l.vm = $2 AND l.cycle = min(d.applied_cycle)) AS "capturedAt"
     FROM disks d WHERE d.tenant = $1 AND d.vm = $2 HAVING count(DISTINCT d.applied_cycle) = 1 AND count(d.applied_cycle) = count(*)`, [tenant, vm]);
  const r = rows[0];
  return { cycle: r?.cycle ?? null, capturedAt: r?.capturedAt ? new Date(r.capturedAt).toISOString() : null };
}
