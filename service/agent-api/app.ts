/**
 * The agent endpoint's routes (docs/formats/agent-protocol.md). Enrollment, the CA and file-store
 * grants need no client certificate; everything else goes through requireAgent, which fixes the
 * tenant from the certificate. Handlers validate, call one domain operation, and present JSON.
 */
import { Hono } from 'hono';
import { fileGrantHandler } from '../../shared/objectstore/file-grant.js';
import type { ServiceContext } from '../context.js';
import { FileGrantPath } from '../context.js';
import { getVm, listVms, setVmProtected } from '../catalog/vms.js';
import { ErrNotFoundHere } from '../errors.js';
import { check, countRequests, errorHandler, bodySizeLimit, pathId, readJson } from '../http/json.js';
import { registerVm } from '../replication/register.js';
import { blockDigests } from '../replication/digests.js';
import { vmForAgent, diskForAgent } from '../replication/scope.js';
import { vmStatus } from '../replication/status.js';
import type { EnqueueMerge } from '../replication/uploads.js';
import { commitChunk, commitLog, completeInitial, grantUpload, refuseCommittedObject } from '../replication/uploads.js';
import { enroll, renew } from '../trust/enroll.js';
import type { AgentEnv } from './auth.js';
import { requireAgent } from './auth.js';
import { registerCommandRoutes } from './commands.js';
import { registerReverseRoutes } from './reverse.js';
import type { FailoverQueues } from '../failover/queue.js';
import { requireTenant } from '../catalog/tenants.js';
import { MaxLogBytes, chunkSchema, commitSchema, digestsQuerySchema, enrollSchema, grantSchema, initialSchema, registerSchema, renewSchema } from '../../shared/protocol/schemas.js';

/** The largest command result body (agent protocol §13.3). */
export const MaxCommandResultBytes = 16 << 20;
const CommandResultPath = /^\/v1\/commands\/[^/]+\/result$/;

export function agentApp(ctx: ServiceContext, enqueue: EnqueueMerge, failoverQueues?: FailoverQueues): Hono<AgentEnv> {
  const app = new Hono<AgentEnv>();
  app.use('*', countRequests(ctx.metrics, 'agent'));
  app.onError(errorHandler(ctx.log));
  app.notFound((c) => c.json({ error: { code: 'not_found', message: `no route ${c.req.method} ${c.req.path}` } }, 404));

  app.get('/v1/ca', (c) => c.json({ certificate: ctx.ca.certPem, fingerprint: ctx.ca.fingerprint }));
  app.post('/v1/enroll', bodySizeLimit(), async (c) => c.json(await enroll(ctx, await readJson(c, enrollSchema))));
  const grants = fileGrantHandler(ctx.store, ctx.fileGrantKey, { beforePut: (key) => refuseCommittedObject(ctx.db, key) });
  // The grant is the credential; the size bound is the largest object a grant is ever made for.
  app.on(['PUT', 'GET'], FileGrantPath, bodySizeLimit(MaxLogBytes), (c) => grants(c.req.raw));

  const agent = new Hono<AgentEnv>();
  // A command's result may carry a digest per range (§13.7: 113 bytes each, so a 4 GiB disk's every
  // 64 KiB block fits); every other route keeps the JSON bound.
  const jsonLimit = bodySizeLimit();
  const resultLimit = bodySizeLimit(MaxCommandResultBytes);
  agent.use('*', requireAgent(ctx), (c, next) => (c.req.method === 'POST' && CommandResultPath.test(c.req.path) ? resultLimit : jsonLimit)(c, next));
  agent.post('/renew', async (c) => c.json(await renew(ctx, c.var.agent.cert, (await readJson(c, renewSchema)).csr)));
  // §3.4: the tenant's current replica key, asked for each pass (a rotation reaches agents this way).
  agent.get('/replica-key', async (c) => c.json({ tenantReplicaKey: (await requireTenant(ctx.db, c.var.agent.tenant)).replicaPublicJwk }));

  agent.get('/vms', async (c) => {
    const vms = await listVms(ctx.db, c.var.agent.tenant);
    return c.json({ vms: await Promise.all(vms.map((v) => vmStatus(ctx.db, v))) });
  });
  agent.put('/vms/:vm', async (c) => {
    const vm = pathId(c, 'vm');
    const { created } = await registerVm(ctx, c.var.agent, vm, await readJson(c, registerSchema));
    return c.json(await vmStatus(ctx.db, (await getVm(ctx.db, c.var.agent.tenant, vm))!), created ? 201 : 200);
  });
  agent.get('/vms/:vm', async (c) => c.json(await vmStatus(ctx.db, await vmForAgent(ctx.db, c.var.agent, pathId(c, 'vm')))));
  agent.delete('/vms/:vm', async (c) => {
    const vm = await vmForAgent(ctx.db, c.var.agent, pathId(c, 'vm'));
    await setVmProtected(ctx.db, vm.tenant, vm.name, false);
    return c.body(null, 204);
  });

  agent.post('/vms/:vm/disks/:disk/grants', async (c) =>
    c.json(await grantUpload(ctx, c.var.agent, pathId(c, 'vm'), pathId(c, 'disk'), await readJson(c, grantSchema))));
  agent.post('/vms/:vm/disks/:disk/commits', async (c) =>
    c.json(await commitLog(ctx, enqueue, c.var.agent, pathId(c, 'vm'), pathId(c, 'disk'), await readJson(c, commitSchema)), 202));
  agent.post('/vms/:vm/disks/:disk/chunks', async (c) =>
    c.json(await commitChunk(ctx, enqueue, c.var.agent, pathId(c, 'vm'), pathId(c, 'disk'), await readJson(c, chunkSchema)), 202));
  agent.post('/vms/:vm/disks/:disk/initial', async (c) =>
    c.json(await completeInitial(ctx, enqueue, c.var.agent, pathId(c, 'vm'), pathId(c, 'disk'), await readJson(c, initialSchema)), 202));
  agent.get('/vms/:vm/disks/:disk/digests', async (c) => {
    const q = check(digestsQuerySchema, c.req.query(), 'query');
    const { disk } = await diskForAgent(ctx.db, c.var.agent, pathId(c, 'vm'), pathId(c, 'disk'));
    return c.json(await blockDigests(disk, q));
  });
  registerCommandRoutes(agent, ctx, failoverQueues);
  registerReverseRoutes(agent, ctx);
  agent.all('*', (c) => {
    throw ErrNotFoundHere(`no route ${c.req.method} ${c.req.path}`);
  });

  app.route('/v1', agent);
  return app;
}
