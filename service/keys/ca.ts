/**
 * CA rotation (docs/security.md, "The service CA"). A new CA key and certificate issue every agent
 * certificate from now on (at enrollment and at each agent's next renewal, whose caChain gives the
 * agent both CAs). During the overlap the previous CA stays trusted for agents' client certificates
 * and still issues the agent endpoint's own certificate, since agents not renewed yet trust only it;
 * its key is kept for that in keys/ca.key.previous. The overlap ends at its time (retire_after) for
 * client certificates, or at `keys retire ca`, which also deletes the previous key and switches the
 * endpoint's certificate to the new CA. One previous CA at a time: retire it before rotating again.
 */
import { readFile, rm } from 'node:fs/promises';
import { LifeboatError } from '../../shared/errors.js';
import { insertPreviousKey, retirePreviousKey } from '../catalog/keys.js';
import type { Queryable } from '../catalog/db.js';
import type { ServiceContext } from '../context.js';
import { refreshKeys } from '../context.js';
import { createCa, loadCa, previousCaKeyFile } from '../trust/ca.js';
import { liveCas } from '../trust/enroll.js';
import { writeKeyFile } from './files.js';
import type { InTransaction } from './master.js';

export interface CaRotation {
  previous: string;
  current: string;
  retireAfter: string;
}

export async function rotateCa(ctx: ServiceContext, inTransaction: InTransaction, overlapMs: number): Promise<CaRotation> {
  await refreshKeys(ctx);
  const live = liveCas(ctx);
  if (live.length > 0) throw new LifeboatError('conflict', `the previous CA ${live[0]!.id} is still in its overlap; retire it first (lifeboat-service keys retire ca --old ${live[0]!.id})`);
  const previous = ctx.ca;
  const previousKeyPem = await readFile(ctx.config.trust.caKeyFile, 'utf8');
  const host = new URL(ctx.config.agentEndpoint.publicUrl).hostname;
  // A name of its own (the date and time): chains are built by name first, so two CAs must differ.
  const made = await createCa(`lifeboat service CA (${host}) ${new Date().toISOString().slice(0, 19)}Z`);
  const next = await loadCa(made.keyPem, made.certPem);
  const retireAfter = new Date(Date.now() + overlapMs);
  // The previous key is kept first, then the catalog knows the previous CA, then the files change:
  // a crash at any point leaves a CA whose key and certificate match, trusted by every agent.
  await writeKeyFile(previousCaKeyFile(ctx.config.trust.caKeyFile), previousKeyPem);
  await inTransaction((tx) => insertPreviousKey(tx, { kind: 'ca', id: previous.fingerprint, material: previous.certPem, retireAfter }));
  // The key before the certificate: between the two, loadCa refuses the pair (they do not match),
  // and ca.key.previous with the previous certificate in the catalog tell what to put back.
  await writeKeyFile(ctx.config.trust.caKeyFile, made.keyPem);
  await writeKeyFile(ctx.config.trust.caCertFile, made.certPem, 0o644);
  await refreshKeys(ctx);
  return { previous: previous.fingerprint, current: next.fingerprint, retireAfter: retireAfter.toISOString() };
}

/**
 * Agents whose newest live certificate was not issued by the current CA: they have not renewed since
 * the rotation and are refused once the previous CA is retired.
 */
export async function certsOutsideCurrentCa(ctx: ServiceContext, db: Queryable = ctx.db): Promise<number> {
  const rows = await db.query<{ n: string }>(`SELECT count(*) AS n FROM (
      SELECT DISTINCT ON (tenant, fqdn) ca_id FROM servers WHERE revoked_at IS NULL AND not_after > now() ORDER BY tenant, fqdn, issued_at DESC
    ) newest WHERE ca_id IS DISTINCT FROM $1`, [ctx.ca.fingerprint]);
  return Number(rows[0]?.n ?? 0);
}

/**
 * Ends the previous CA's overlap now. Refused while agents have not renewed since the rotation (they
 * would stop replicating), unless forced.
 */
export async function retireCa(ctx: ServiceContext, inTransaction: InTransaction, id: string, force: boolean): Promise<{ retired: string; certificatesRefused: number }> {
  const left = await certsOutsideCurrentCa(ctx);
  if (left > 0 && !force) {
    throw new LifeboatError('conflict', `${left} agent(s) have not renewed since the CA rotation (their newest certificate is of another CA) and would be refused: wait for their renewal, or retire with --force`);
  }
  const row = await inTransaction((tx) => retirePreviousKey(tx, 'ca', id));
  if (!row) throw new LifeboatError('not_found', `no previous CA ${id.slice(0, 64)} (lifeboat-service keys list)`);
  await rm(previousCaKeyFile(ctx.config.trust.caKeyFile), { force: true });
  await refreshKeys(ctx);
  return { retired: id, certificatesRefused: left };
}
