/**
 * Master key rotation (docs/security.md, "The master key"). Steps, each safe to be interrupted:
 *   1. keys/master.key.previous := the current key (both files now hold it);
 *   2. keys/master.key := a new random key (the ring holds both: every process reads either wrap);
 *   3. one catalog transaction re-wraps every tenant's replica keys (current and previous ones) and
 *      re-seals every webhook secret under the new key, with the rotation's audit row.
 * A crash before 3 commits leaves every secret under the previous key, which is kept; running the
 * rotation again finds secrets not under the current key and resumes at 3 instead of making a third
 * key. `retire` removes the previous key's file once nothing is wrapped under it.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { LifeboatError } from '../../shared/errors.js';
import type { Queryable } from '../catalog/db.js';
import { setTenantPreviousWrapped, tenantPreviousKeys } from '../catalog/keys.js';
import { listTenants } from '../catalog/tenants.js';
import { listSubscriptions } from '../catalog/webhooks.js';
import type { ServiceContext } from '../context.js';
import { openSecret, sealSecret } from '../events/secrets.js';
import { MasterKeys, MasterKeyBytes, masterKeyId, previousMasterKeyFile } from '../trust/master.js';
import { writeKeyFile } from './files.js';

/** Where a rotation may be stopped by a test (an injected failure between steps). */
export type MasterStep = 'previous-written' | 'current-written' | 'rewrapped';

export interface MasterRotation {
  previous: string;
  current: string;
  resumed: boolean;
  rewrapped: { tenantKeys: number; webhookSecrets: number };
}

/** Runs fn in the rotation's audited transaction. */
export type InTransaction = <T>(fn: (tx: Queryable) => Promise<T>) => Promise<T>;

/** A wrapped secret found under another key than the current one. */
interface Stale {
  what: 'tenant' | 'tenant-previous' | 'webhook';
  id: string;
  kid?: string;
  wrapped: string;
}

/** Every secret in the catalog not yet under the current master key. */
async function staleSecrets(ring: MasterKeys, db: Queryable): Promise<Stale[]> {
  const stale: Stale[] = [];
  const current = ring.currentId;
  for (const t of await listTenants(db)) if (MasterKeys.wrappedWith(t.replicaPrivateWrapped) !== current) stale.push({ what: 'tenant', id: t.name, wrapped: t.replicaPrivateWrapped });
  for (const k of await tenantPreviousKeys(db)) if (MasterKeys.wrappedWith(k.privateWrapped) !== current) stale.push({ what: 'tenant-previous', id: k.tenant, kid: k.kid, wrapped: k.privateWrapped });
  for (const s of await listSubscriptions(db, undefined)) {
    try {
      openSecret(ring.current, s.id, s.secretSealed);
    } catch {
      stale.push({ what: 'webhook', id: s.id, wrapped: s.secretSealed });
    }
  }
  return stale;
}

/**
 * Re-wraps each stale secret only where the row still holds what was read (compare and set): a row
 * changed meanwhile (a tenant key rotated, a webhook secret changed) was written under the current key
 * and must not be overwritten with the old value re-wrapped.
 */
async function rewrap(ring: MasterKeys, tx: Queryable, stale: Stale[]): Promise<MasterRotation['rewrapped']> {
  const counts = { tenantKeys: 0, webhookSecrets: 0 };
  for (const s of stale) {
    if (s.what === 'webhook') {
      const secret = openSecret(ring.all(), s.id, s.wrapped);
      const rows = await tx.query('UPDATE webhook_subscriptions SET secret_sealed = $2 WHERE id = $1 AND secret_sealed = $3 RETURNING id', [s.id, sealSecret(ring.current, s.id, secret), s.wrapped]);
      counts.webhookSecrets += rows.length;
      continue;
    }
    const wrapped = await ring.wrap(await ring.unwrap(s.wrapped, `tenant ${s.id}'s replica key`));
    const rows = s.what === 'tenant'
      ? await tx.query('UPDATE tenants SET replica_private_wrapped = $2 WHERE name = $1 AND replica_private_wrapped = $3 RETURNING name', [s.id, wrapped, s.wrapped])
      : await setTenantPreviousWrapped(tx, s.id, s.kid!, wrapped, s.wrapped);
    counts.tenantKeys += rows.length;
  }
  return counts;
}

export async function rotateMaster(ctx: ServiceContext, inTransaction: InTransaction, stop?: (step: MasterStep) => Promise<void>): Promise<MasterRotation> {
  const ring = ctx.master;
  await ring.reload();
  let resumed = false;
  if (ring.previous && !ring.previous.equals(ring.current)) {
    // A previous key is held: an unfinished rotation (secrets still under it) is resumed; a finished
    // one must be retired before another, so no secret is ever three keys away.
    if ((await staleSecrets(ring, ctx.db)).length === 0) {
      throw new LifeboatError('conflict', `the previous master key ${ring.previousId} is still kept; retire it first (lifeboat-service keys retire master)`);
    }
    resumed = true;
  } else {
    await writeKeyFile(previousMasterKeyFile(ring.file), `${ring.current.toString('base64')}\n`);
    await stop?.('previous-written');
    await writeKeyFile(ring.file, `${randomBytes(MasterKeyBytes).toString('base64')}\n`);
    await ring.reload();
    await stop?.('current-written');
  }
  const rewrapped = await inTransaction(async (tx) => {
    const counts = await rewrap(ring, tx, await staleSecrets(ring, tx));
    await stop?.('rewrapped');
    return counts;
  });
  return { previous: ring.previousId ?? ring.currentId, current: ring.currentId, resumed, rewrapped };
}

/** Deletes the previous master key's file; refused while any secret is still wrapped under it. */
export async function retireMaster(ctx: ServiceContext, inTransaction: InTransaction): Promise<{ retired: string }> {
  const ring = ctx.master;
  await ring.reload();
  if (!ring.previous) throw new LifeboatError('not_found', 'no previous master key is kept (nothing to retire)');
  const retired = masterKeyId(ring.previous);
  await inTransaction(async (tx) => {
    const stale = await staleSecrets(ring, tx);
    if (stale.length > 0) throw new LifeboatError('conflict', `${stale.length} secret(s) are still wrapped under master key ${retired} (a rotation did not finish): run lifeboat-service keys rotate master again first`);
  });
  await rm(previousMasterKeyFile(ring.file), { force: true });
  await ring.reload();
  return { retired };
}
