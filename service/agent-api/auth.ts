/**
 * Client-certificate authentication for the agent endpoint. The TLS layer asks for a certificate but
 * does not reject (enrollment comes without one); this middleware requires one that chains to the
 * service CA, then looks its serial up in the catalog on every request, so a revocation takes effect
 * at the next request. The tenant comes from that row and from nowhere else.
 */
import type { TLSSocket } from 'node:tls';
import type { HttpBindings } from '@hono/node-server';
import type { MiddlewareHandler } from 'hono';
import { getServerCert } from '../catalog/servers.js';
import type { ServerCertRow } from '../catalog/servers.js';
import type { ServiceContext } from '../context.js';
import { ErrUnauthenticated } from '../errors.js';
import { liveCas } from '../trust/enroll.js';

export interface AgentIdentity {
  serial: string;
  tenant: string;
  fqdn: string;
  cert: ServerCertRow;
}

export type AgentEnv = { Bindings: HttpBindings; Variables: { agent: AgentIdentity } };

/**
 * The verified client certificate's serial (lower-case hex) and its issuer's fingerprint (SHA-256,
 * lower-case hex), or undefined when none was verified.
 */
export function peerCertificate(incoming: HttpBindings['incoming']): { serial: string; issuer: string | undefined } | undefined {
  const socket = incoming.socket as TLSSocket;
  if (typeof socket.getPeerCertificate !== 'function' || !socket.authorized) return undefined;
  const cert = socket.getPeerCertificate(true);
  if (!cert || !cert.serialNumber) return undefined;
  const issuer = cert.issuerCertificate?.fingerprint256?.replace(/:/g, '').toLowerCase();
  return { serial: cert.serialNumber.toLowerCase().replace(/^0+/, ''), issuer };
}

/** Whether a certificate of this issuer is accepted now: the current CA, or a previous one in its overlap. */
function issuerAccepted(ctx: ServiceContext, issuer: string | undefined): boolean {
  return issuer === ctx.ca.fingerprint || liveCas(ctx).some((p) => p.id === issuer);
}

/** Requires a live client certificate; sets c.var.agent. */
export function requireAgent(ctx: ServiceContext): MiddlewareHandler<AgentEnv> {
  return async function agentAuth(c, next) {
    const peer = peerCertificate(c.env.incoming);
    if (peer === undefined) throw ErrUnauthenticated('certificate_required', 'a client certificate issued by this service is required (enroll first)');
    // TLS trusts the CAs it was given when the connection began; a CA retired since (or whose overlap
    // ended) is refused here, at the next request.
    if (!issuerAccepted(ctx, peer.issuer)) throw ErrUnauthenticated('certificate_ca_retired', 'client certificate was issued by a CA this service no longer trusts; enroll again');
    const { serial } = peer;
    const row = await getServerCert(ctx.db, serial);
    if (!row) throw ErrUnauthenticated('certificate_unknown', 'client certificate is not known to this service');
    if (row.revokedAt !== null) throw ErrUnauthenticated('certificate_revoked', `certificate of ${row.fqdn} was revoked`);
    if (row.notAfter.getTime() <= Date.now()) throw ErrUnauthenticated('certificate_expired', `certificate of ${row.fqdn} has expired; enroll again`);
    c.set('agent', { serial, tenant: row.tenant, fqdn: row.fqdn, cert: row });
    await next();
  };
}
