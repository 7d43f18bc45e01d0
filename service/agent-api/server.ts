/**
 * The agent endpoint's HTTPS server: TLS asks every client for a certificate chaining to the service
 * CA but lets the handshake finish without one (enrollment has none); requireAgent decides per route.
 */
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import { createAdaptorServer } from '@hono/node-server';
import type { ServiceContext } from '../context.js';
import { issueServerCert } from '../trust/ca.js';
import type { EnqueueMerge } from '../replication/uploads.js';
import type { FailoverQueues } from '../failover/queue.js';
import { agentApp } from './app.js';

/** The server certificate is made fresh at each start for the configured names (short-lived). */
export const ServerCertDays = 90;

export async function createAgentServer(ctx: ServiceContext, enqueue: EnqueueMerge, failoverQueues?: FailoverQueues): Promise<Server> {
  const { certPem, keyPem } = await issueServerCert(ctx.ca, ctx.config.agentEndpoint.serverNames, ServerCertDays);
  const app = agentApp(ctx, enqueue, failoverQueues);
  return createAdaptorServer({
    fetch: app.fetch,
    createServer,
    serverOptions: {
      key: keyPem,
      cert: `${certPem}${ctx.ca.certPem}`,
      ca: [ctx.ca.certPem],
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
    },
  }) as Server;
}
