/**
 * The tenant's replica key as the service has it now (protocol §3.4): asked for each pass, so a
 * rotation reaches the agent within one pass; kept in tenant-key.jwk. An older service (404) or a
 * service that cannot be reached leaves the key as it is: logs sealed to an older key still merge
 * while the service keeps it (docs/security.md).
 */
import { checkJwk } from '../../shared/crypto/keys.js';
import { replicaKeyResponseSchema } from '../../shared/protocol/schemas.js';
import type { AgentState, IdentityFiles } from '../state/store.js';
import { sendParsed } from '../transport/http-client.js';

/** Stores a replica key the service sent when it is not the one held; returns the identity to use. */
export async function keepReplicaKey(state: AgentState, files: IdentityFiles, key: unknown): Promise<IdentityFiles> {
  const jwk = checkJwk(key, 'public', 'tenant replica key');
  const held = JSON.parse(files.tenantKeyJwk) as { kid?: unknown; x?: unknown };
  if (held.kid === jwk.kid && held.x === jwk.x) return files;
  const next: IdentityFiles = { ...files, tenantKeyJwk: `${JSON.stringify(jwk)}\n` };
  await state.writeIdentity(next);
  return next;
}

export async function refreshReplicaKey(state: AgentState, files: IdentityFiles): Promise<IdentityFiles> {
  const res = await sendParsed(replicaKeyResponseSchema, {
    method: 'GET', url: new URL('/v1/replica-key', files.identity.serviceUrl).toString(),
    tls: { ca: files.caPem, key: files.keyPem, cert: files.certPem },
  });
  return keepReplicaKey(state, files, res.tenantReplicaKey);
}
