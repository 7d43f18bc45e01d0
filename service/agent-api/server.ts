/**
 * The agent endpoint's HTTPS server: TLS asks every client for a certificate chaining to the service
 * CA but lets the handshake finish without one (enrollment has none); requireAgent decides per route.
 */
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import { createAdaptorServer } from '@hono/node-server';
import type { ServiceContext } from '../context.js';
import { issueServerCert } from '../trust/ca.js';
import { liveCas } from '../trust/enroll.js';
import type { EnqueueMerge } from '../replication/uploads.js';
import type { FailoverQueues } from '../failover/queue.js';
import { agentApp } from './app.js';

/** The server certificate is made fresh at each start for the configured names (short-lived). */
export const ServerCertDays = 90;

/**
 * The TLS credentials for the keys held now. During a CA rotation's overlap the server certificate is
 * the previous CA's (every agent trusts it: those not renewed yet trust only it), after it the current
 * CA's; client certificates of the current CA and of a previous one in its overlap are trusted.
 */
async function tlsCredentials(ctx: ServiceContext): Promise<{ key: string; cert: string; ca: string[] }> {
  const live = liveCas(ctx);
  const issuer = live.find((p) => p.ca !== undefined)?.ca ?? ctx.ca;
  const { certPem, keyPem } = await issueServerCert(issuer, ctx.config.agentEndpoint.serverNames, ServerCertDays);
  return { key: keyPem, cert: `${certPem}${issuer.certPem}`, ca: [ctx.ca.certPem, ...live.map((p) => p.certPem)] };
}

export async function createAgentServer(ctx: ServiceContext, enqueue: EnqueueMerge, failoverQueues?: FailoverQueues): Promise<Server> {
  const app = agentApp(ctx, enqueue, failoverQueues);
  const server = createAdaptorServer({
    fetch: app.fetch,
    createServer,
    serverOptions: { ...(await tlsCredentials(ctx)), requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' },
  }) as Server;
  // A rotation or retirement (here or in another process) changes the credentials of new connections.
  const update = async () => server.setSecureContext({ ...(await tlsCredentials(ctx)), minVersion: 'TLSv1.2' });
  ctx.keyListeners.add(update);
  server.on('close', () => ctx.keyListeners.delete(update));
  return server;
}
