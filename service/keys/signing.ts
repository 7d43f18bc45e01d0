/**
 * Signing key rotation (docs/security.md, "The signing key"): a new ES256 key signs from now on;
 * the replaced key's public half stays in the catalog until the end of the overlap, so tokens it
 * signed (operator API tokens, enrollment tokens, upload grants) verify until they expire or the
 * overlap ends, whichever is first. The operator token file is signed again with the new key.
 * Order: the catalog row first (with the audit row), then the files: a crash between leaves the
 * old key current and listed as previous, which is harmless, and the rotation can be run again.
 */
import { readFile } from 'node:fs/promises';
import type { JWK } from 'jose';
import { LifeboatError } from '../../shared/errors.js';
import { insertPreviousKey, retirePreviousKey } from '../catalog/keys.js';
import type { ServiceContext } from '../context.js';
import { refreshKeys } from '../context.js';
import { AdminTokenSeconds } from '../config/init.js';
import { loadSigner, newSigningJwk, signApiToken, signingPublicJwk } from '../trust/tokens.js';
import { writeKeyFile } from './files.js';
import type { InTransaction } from './master.js';

export async function rotateSigning(ctx: ServiceContext, inTransaction: InTransaction, overlapMs: number): Promise<{ previous: string; current: string; retireAfter: string }> {
  const old = await signingPublicJwk(JSON.parse(await readFile(ctx.config.trust.signingKeyFile, 'utf8')) as JWK);
  const jwk = await newSigningJwk();
  const signer = await loadSigner(jwk);
  const retireAfter = new Date(Date.now() + overlapMs);
  await inTransaction((tx) => insertPreviousKey(tx, { kind: 'signing', id: old.kid, material: JSON.stringify(old.publicJwk), retireAfter }));
  await writeKeyFile(ctx.config.trust.signingKeyFile, `${JSON.stringify(jwk)}\n`);
  await writeKeyFile(ctx.config.adminTokenFile, `${await signApiToken(signer, { role: 'hoster-admin', sub: 'admin' }, AdminTokenSeconds)}\n`);
  await refreshKeys(ctx);
  return { previous: old.kid, current: signer.kid, retireAfter: retireAfter.toISOString() };
}

/** Ends a previous signing key's overlap now: tokens it signed are refused from the next request on. */
export async function retireSigning(ctx: ServiceContext, inTransaction: InTransaction, kid: string): Promise<{ retired: string }> {
  const row = await inTransaction((tx) => retirePreviousKey(tx, 'signing', kid));
  if (!row) throw new LifeboatError('not_found', `no previous signing key ${kid.slice(0, 64)} (lifeboat-service keys list)`);
  await refreshKeys(ctx);
  return { retired: kid };
}
