/**
 * Quotas where they bite (docs/usage.md): a new protected VM at registration, the initial copy of a
 * new replica at commit, a test failover at its request. Each refusal is a 409 with reason
 * `quota_exceeded` naming the quota, the limit and the use, and a `quota.reached` event (written on
 * its own: the refused change is not).
 *
 * What already runs is never stopped by a quota lowered under it: a VM already protected registers
 * again, a replica whose base is complete keeps committing logs (and resync bases), a test failover
 * running goes on. Those are warned about instead: a log line (once an hour per tenant and quota) and
 * `warnings` in the tenant's settings and VM list. Real failovers are never refused (failover/engine.ts
 * records what they exceeded in their warnings).
 */
import type { Logger } from 'pino';
import type { Queryable } from '../catalog/db.js';
import type { TenantLimits } from '../catalog/usage.js';
import { getTenantLimits, latestReplicaBytes } from '../catalog/usage.js';
import { ServiceError } from '../errors.js';
import { emitEvent } from '../events/emit.js';
import { formatBytes } from '../../shared/units.js';

export type QuotaName = 'protectedVms' | 'replicaGb' | 'concurrentTestFailovers';

export const ErrQuotaExceeded = (message: string) => new ServiceError('conflict', message, 'quota_exceeded');

/** How often the same tenant's same quota is logged as exceeded by running replication. */
const WarnEveryMs = 3_600_000;
const warned = new Map<string, number>();

/** The protected VMs of a tenant. */
export async function protectedVms(db: Queryable, tenant: string): Promise<number> {
  return Number((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM vms WHERE tenant = $1 AND protected', [tenant]))[0]!.n);
}

/**
 * The tenant's replica storage now, as well as it is known: the last sample plus every byte received
 * since (an upper bound until the next sample; merged logs free what they replace).
 */
export async function replicaBytesNow(db: Queryable, tenant: string): Promise<number> {
  const last = (await latestReplicaBytes(db, tenant)).get(tenant);
  const since = await db.query<{ n: number }>(`SELECT coalesce(sum(bytes), 0)::int8 AS n FROM usage_events WHERE tenant = $1 AND kind = 'bytes_received' AND at > $2`,
    [tenant, last?.at ?? new Date(0)]);
  return (last?.bytes ?? 0) + Number(since[0]!.n);
}

/** Test failovers of the tenant not ended. */
export async function liveTestFailovers(db: Queryable, tenant: string): Promise<number> {
  return Number((await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM failovers WHERE tenant = $1 AND kind = 'test' AND ended_at IS NULL`, [tenant]))[0]!.n);
}

async function refuse(db: Queryable, tenant: string, quota: QuotaName, limit: number, used: number, message: string): Promise<never> {
  await emitEvent(db, { type: 'quota.reached', tenant, data: { quota, limit, used } });
  throw ErrQuotaExceeded(message);
}

/** Before a new VM is registered (not one registering again). */
export async function checkProtectedVmQuota(db: Queryable, tenant: string): Promise<void> {
  const limit = (await getTenantLimits(db, tenant))?.protectedVms ?? null;
  if (limit === null) return;
  const used = await protectedVms(db, tenant);
  if (used >= limit) await refuse(db, tenant, 'protectedVms', limit, used, `tenant ${tenant} protects ${used} VMs, its quota of protected VMs (${limit}); unprotect one or ask the hoster for more`);
}

/**
 * At a commit: the initial copy of a replica (its base never complete) is refused over the replica
 * storage quota; anything else of a replica that exists is taken, with a warning logged.
 */
export async function checkReplicaQuota(db: Queryable, log: Logger, tenant: string, initialCopy: boolean): Promise<void> {
  const limit = (await getTenantLimits(db, tenant))?.replicaBytes ?? null;
  if (limit === null) return;
  const used = await replicaBytesNow(db, tenant);
  if (used < limit) return;
  const what = `tenant ${tenant} holds ${formatBytes(used)} of replica storage, its quota ${formatBytes(limit)}`;
  if (initialCopy) await refuse(db, tenant, 'replicaGb', limit / 1e9, used / 1e9, `${what}: a new replica's initial copy is refused (replication that runs goes on)`);
  const key = `${tenant}/replicaGb`;
  if (Date.now() - (warned.get(key) ?? 0) >= WarnEveryMs) {
    warned.set(key, Date.now());
    log.warn({ tenant, quota: 'replicaGb', limitBytes: limit, usedBytes: used }, `${what}: running replication goes on`);
  }
}

/** Before a test failover is placed. */
export async function checkTestFailoverQuota(db: Queryable, tenant: string): Promise<void> {
  const limit = (await getTenantLimits(db, tenant))?.concurrentTestFailovers ?? null;
  if (limit === null) return;
  const used = await liveTestFailovers(db, tenant);
  if (used >= limit) await refuse(db, tenant, 'concurrentTestFailovers', limit, used, `tenant ${tenant} runs ${used} test failovers, its quota of concurrent test failovers (${limit}); stop one first`);
}

/** Every quota the tenant is over now (what runs goes on; new work of that kind is refused). */
export async function quotaWarnings(db: Queryable, tenant: string, limits?: TenantLimits): Promise<string[]> {
  const l = limits ?? (await getTenantLimits(db, tenant));
  if (!l) return [];
  const out: string[] = [];
  if (l.protectedVms !== null) {
    const used = await protectedVms(db, tenant);
    if (used > l.protectedVms) out.push(`${used} protected VMs over the quota of ${l.protectedVms}: they go on replicating; no new VM is taken`);
  }
  if (l.replicaBytes !== null) {
    const used = await replicaBytesNow(db, tenant);
    if (used >= l.replicaBytes) out.push(`${formatBytes(used)} of replica storage at or over the quota of ${formatBytes(l.replicaBytes)}: replication goes on; no new replica's initial copy is taken`);
  }
  if (l.concurrentTestFailovers !== null) {
    const used = await liveTestFailovers(db, tenant);
    if (used > l.concurrentTestFailovers) out.push(`${used} test failovers running over the quota of ${l.concurrentTestFailovers}: they run on; no new one starts`);
  }
  return out;
}
