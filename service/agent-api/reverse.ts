/**
 * The agent endpoint's envelope-key and reverse-replication routes (docs/formats/agent-protocol.md
 * §14, §15), under the client certificate: the tenant and server come from the certificate alone.
 *
 *   PUT  /v1/envelope-keys                               {jwk}: register a public envelope key
 *   GET  /v1/envelope-keys                               this server's keys, newest first
 *   GET  /v1/vms/{vm}/reverse                            the VM's reversed disks and their lag
 *   GET  /v1/vms/{vm}/disks/{disk}/reverse/logs          logs after ?generation=&after=, with GET grants
 *   POST /v1/vms/{vm}/disks/{disk}/reverse/applied       {generation, sequence}: applied up to there
 */
import type { Hono } from 'hono';
import type { ServiceContext } from '../context.js';
import { check, pathId, readJson } from '../http/json.js';
import { agentKeys, registerAgentKey, reverseApplied, reverseLogs, reverseStatus } from '../reverse/agent-side.js';
import { envelopeKeySchema, reverseAppliedSchema, reverseLogsQuerySchema } from '../../shared/protocol/schemas.js';
import type { AgentEnv } from './auth.js';

export function registerReverseRoutes(agent: Hono<AgentEnv>, ctx: ServiceContext): void {
  agent.put('/envelope-keys', async (c) => c.json(await registerAgentKey(ctx.db, c.var.agent, (await readJson(c, envelopeKeySchema)).jwk)));
  agent.get('/envelope-keys', async (c) => c.json(await agentKeys(ctx.db, c.var.agent)));
  agent.get('/vms/:vm/reverse', async (c) => c.json(await reverseStatus(ctx.db, c.var.agent, pathId(c, 'vm'))));
  agent.get('/vms/:vm/disks/:disk/reverse/logs', async (c) =>
    c.json(await reverseLogs(ctx, c.var.agent, pathId(c, 'vm'), pathId(c, 'disk'), check(reverseLogsQuerySchema, c.req.query(), 'query'))));
  agent.post('/vms/:vm/disks/:disk/reverse/applied', async (c) =>
    c.json(await reverseApplied(ctx.db, c.var.agent, pathId(c, 'vm'), pathId(c, 'disk'), await readJson(c, reverseAppliedSchema))));
}
