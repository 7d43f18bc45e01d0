/**
 * Certificate renewal (protocol §3.2): after two thirds of its validity the agent makes a new key and
 * CSR and asks the service, over mutual TLS with the current certificate, for a new certificate.
 * The old one stays valid until its own expiry, so a failed renewal is retried at the next pass.
 */
import { X509Certificate } from 'node:crypto';
import { enrollResponseSchema } from '../../shared/protocol/schemas.js';
import type { AgentState, IdentityFiles } from '../state/store.js';
import { sendParsed } from '../transport/http-client.js';
import { certificateNotAfter, makeKeyAndCsr } from './csr.js';
import { registerNewEnvelopeKey } from '../reverse/keys.js';
import { keepReplicaKey } from './replica-key.js';

/** When the certificate should be renewed: two thirds into its validity. */
export function renewAfter(certPem: string): Date {
  const cert = new X509Certificate(certPem);
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  return new Date(from + ((to - from) * 2) / 3);
}

/** Renews the certificate when due; returns the new identity, or undefined when nothing was due. */
export async function renewIfDue(state: AgentState, files: IdentityFiles, now = new Date()): Promise<IdentityFiles | undefined> {
  if (now < renewAfter(files.certPem)) return undefined;
  const { keyPem, csrPem } = await makeKeyAndCsr(files.identity.name);
  const res = await sendParsed(enrollResponseSchema, {
    method: 'POST', url: new URL('/v1/renew', files.identity.serviceUrl).toString(),
    tls: { ca: files.caPem, key: files.keyPem, cert: files.certPem }, json: { csr: csrPem },
  });
  // The CAs the service trusts now (after a CA rotation: the new one, and the previous one while its
  // overlap lasts) replace the ones held: the answer came over TLS verified with those (docs/security.md).
  const caPem = res.caChain.length > 0 ? res.caChain.join('') : files.caPem;
  const renewed: IdentityFiles = { ...files, keyPem, certPem: res.certificate, caPem, identity: { ...files.identity, certNotAfter: certificateNotAfter(res.certificate) } };
  await state.writeIdentity(renewed);
  await keepReplicaKey(state, renewed, res.tenantReplicaKey).then((f) => Object.assign(renewed, f));
  // A new envelope key with every new certificate (protocol §14): older keys stay for logs sealed to
  // them. Not registered (the service did not answer): the last registered key stays the one sealed
  // to, and the next renewal or `envelope-key register` registers one.
  await registerNewEnvelopeKey(state.dir, renewed).catch(() => undefined);
  return renewed;
}
