/**
 * A tenant's replica key rotation (docs/security.md, "A tenant's replica key"). A new X25519 pair
 * becomes the tenant's key: agents seal to it from their next pass (GET /v1/replica-key, agent
 * protocol §3.4) or renewal. The replaced key is kept, wrapped under the master key, and merges open
 * with every key kept (the wrap's kid picks it), so logs sealed before an agent learned the new key
 * still merge. Retiring the old key is refused while the tenant has logs or bases not merged yet.
 */
import { LifeboatError } from '../../shared/errors.js';
import type { Queryable } from '../catalog/db.js';
import { deleteTenantPreviousKey, insertTenantPreviousKey, tenantPreviousKeys } from '../catalog/keys.js';
import { requireTenant } from '../catalog/tenants.js';
import type { ServiceContext } from '../context.js';
import { newReplicaKeyPair } from '../trust/tokens.js';

export async function rotateTenantKey(ctx: ServiceContext, tx: Queryable, tenant: string): Promise<{ tenant: string; previous: string; current: string }> {
  const rows = await tx.query<{ name: string }>('SELECT name FROM tenants WHERE name = $1 FOR UPDATE', [tenant]);
  if (rows.length === 0) throw new LifeboatError('not_found', `no tenant ${tenant}`);
  const t = await requireTenant(tx, tenant);
  const previous = String(t.replicaPublicJwk.kid ?? '');
  if (!previous) throw new LifeboatError('corrupt', `tenant ${tenant}'s replica key has no kid`);
  const next = await newReplicaKeyPair(ctx.master);
  await insertTenantPreviousKey(tx, { tenant, kid: previous, publicJwk: t.replicaPublicJwk, privateWrapped: t.replicaPrivateWrapped });
  await tx.query('UPDATE tenants SET replica_public_jwk = $2, replica_private_wrapped = $3 WHERE name = $1', [tenant, JSON.stringify(next.publicJwk), next.wrappedPrivate]);
  return { tenant, previous, current: String(next.publicJwk.kid) };
}

/** Logs and bases of the tenant committed and not merged yet (they may be sealed to a previous key). */
async function unmerged(tx: Queryable, tenant: string): Promise<number> {
  const rows = await tx.query<{ n: string }>("SELECT count(*) AS n FROM logs WHERE tenant = $1 AND status = 'pending'", [tenant]);
  return Number(rows[0]?.n ?? 0);
}

export async function retireTenantKey(tx: Queryable, tenant: string, kid: string, force: boolean): Promise<{ tenant: string; retired: string }> {
  await requireTenant(tx, tenant);
  if (!(await tenantPreviousKeys(tx, tenant)).some((k) => k.kid === kid)) throw new LifeboatError('not_found', `tenant ${tenant} has no previous replica key ${kid.slice(0, 64)} (lifeboat-service keys list)`);
  const pending = await unmerged(tx, tenant);
  if (pending > 0 && !force) throw new LifeboatError('conflict', `tenant ${tenant} has ${pending} committed log(s) not merged yet, which may be sealed to key ${kid}: retire it once they are merged, or with --force (such a log then puts its disk into resync)`);
  await deleteTenantPreviousKey(tx, tenant, kid);
  return { tenant, retired: kid };
}
