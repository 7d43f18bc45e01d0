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

export interface AgentIdentity {
  serial: string;
  tenant: string;
  fqdn: string;
  cert: ServerCertRow;
}

export type AgentEnv = { Bindings: HttpBindings; Variables: { agent: AgentIdentity } };

/** The verified client certificate's serial (lower-case hex), or undefined when none was verified. */
export function peerSerial(incoming: HttpBindings['incoming']): string | undefined {
  const socket = incoming.socket as TLSSocket;
  if (typeof socket.getPeerCertificate !== 'function' || !socket.authorized) return undefined;
  const cert = socket.getPeerCertificate();
  if (!cert || !cert.serialNumber) return undefined;
  return cert.serialNumber.toLowerCase().replace(/^0+/, '');
}

/** Requires a live client certificate; sets c.var.agent. */
export function requireAgent(ctx: ServiceContext): MiddlewareHandler<AgentEnv> {
  return async function agentAuth(c, next) {
    const serial = peerSerial(c.env.incoming);
    if (serial === undefined) throw ErrUnauthenticated('certificate_required', 'a client certificate issued by this service is required (enroll first)');
    const row = await getServerCert(ctx.db, serial);
    if (!row) throw ErrUnauthenticated('certificate_unknown', 'client certificate is not known to this service');
    if (row.revokedAt !== null) throw ErrUnauthenticated('certificate_revoked', `certificate of ${row.fqdn} was revoked`);
    if (row.notAfter.getTime() <= Date.now()) throw ErrUnauthenticated('certificate_expired', `certificate of ${row.fqdn} has expired; enroll again`);
    c.set('agent', { serial, tenant: row.tenant, fqdn: row.fqdn, cert: row });
    await next();
  };
}
