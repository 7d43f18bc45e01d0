/**
 * The agent endpoint's command routes (docs/formats/agent-protocol.md §13), under the client
 * certificate like every agent route: the tenant and server come from the certificate alone, so a
 * command of another tenant or server is never delivered and reads as one that does not exist.
 *
 *   GET  /v1/commands?wait=S&instance=I     the long-poll: this agent's deliverable commands
 *   POST /v1/commands/{id}/progress         a step of a running command; answers its state
 *   POST /v1/commands/{id}/result           {ok, result | error}; answers its state
 *   POST /v1/vms/{vm}/failovers             {kind: planned}: the agent asks for a planned failover
 *   GET  /v1/failovers/{id}                 that failover's state and steps, for the agent to follow
 */
import type { Hono } from 'hono';
import type { FailoverRow } from '../catalog/failovers.js';
import { getFailover, listSteps } from '../catalog/failovers.js';
import type { Queryable } from '../catalog/db.js';
import type { CommandRow } from '../commands/catalog.js';
import { addProgress, deliverCommands, expireCommands, finishCommand, selectAgentCommand } from '../commands/catalog.js';
import { CommandPollMs, sleepUntilWoken } from '../commands/wake.js';
import type { ServiceContext } from '../context.js';
import { ErrNotFoundHere } from '../errors.js';
import { requestFailover } from '../failover/engine.js';
import type { FailoverQueues } from '../failover/queue.js';
import { check, pathId, readJson } from '../http/json.js';
import { vmForAgent } from '../replication/scope.js';
import { LifeboatError } from '../../shared/errors.js';
import { agentFailoverSchema, commandProgressSchema, commandResultSchema, commandsQuerySchema } from '../../shared/protocol/schemas.js';
import type { AgentEnv } from './auth.js';

/** Adds the command routes to the agent endpoint's certificate-checked sub-app. */
export function registerCommandRoutes(agent: Hono<AgentEnv>, ctx: ServiceContext, failoverQueues: FailoverQueues | undefined): void {
  const { db } = ctx;

  agent.get('/commands', async (c) => {
    const q = check(commandsQuerySchema, c.req.query(), 'query');
    const { tenant, fqdn } = c.var.agent;
    const signal = c.req.raw.signal;
    const deadline = Date.now() + q.wait * 1000;
    await expireCommands(db);
    for (;;) {
      // A client gone meanwhile gets nothing marked delivered to it.
      if (signal.aborted) return c.json({ commands: [] });
      const rows = await deliverCommands(db, tenant, fqdn, q.instance);
      if (rows.length > 0 || Date.now() >= deadline) return c.json({ commands: rows.map(presentCommand) });
      await sleepUntilWoken(tenant, fqdn, Math.min(CommandPollMs, deadline - Date.now()), signal);
    }
  });

  agent.post('/commands/:id/progress', async (c) => {
    const cmd = await ownCommand(db, c.var.agent, pathId(c, 'id'));
    const body = await readJson(c, commandProgressSchema);
    return c.json({ state: await addProgress(db, cmd.id, body.step, body.detail ?? null) });
  });

  agent.post('/commands/:id/result', async (c) => {
    const cmd = await ownCommand(db, c.var.agent, pathId(c, 'id'));
    const body = await readJson(c, commandResultSchema);
    return c.json({ state: await finishCommand(db, cmd.id, body) });
  });

  agent.post('/vms/:vm/failovers', async (c) => {
    const vm = await vmForAgent(db, c.var.agent, pathId(c, 'vm'), { protectedOnly: true });
    await readJson(c, agentFailoverSchema);
    if (!failoverQueues) throw new LifeboatError('unavailable', 'this service process cannot start failovers (it has no failover queues: no Redis)');
    const { failover } = await requestFailover(ctx, failoverQueues, {
      tenant: vm.tenant, vm: vm.name, kind: 'planned', point: 'latest', requestedBy: `agent ${c.var.agent.fqdn}`,
    });
    return c.json(await presentFailover(db, failover), 202);
  });

  agent.get('/failovers/:id', async (c) => {
    const f = await getFailover(db, pathId(c, 'id'));
    if (!f || f.tenant !== c.var.agent.tenant) throw ErrNotFoundHere(`no failover ${c.req.param('id')}`);
    await vmForAgent(db, c.var.agent, f.vm);
    return c.json(await presentFailover(db, f));
  });
}

/** The agent's own command; another tenant's or server's answers 404 as a missing one. */
async function ownCommand(db: Queryable, agent: { tenant: string; fqdn: string }, id: string): Promise<CommandRow> {
  const cmd = await selectAgentCommand(db, agent.tenant, agent.fqdn, id);
  if (!cmd) throw ErrNotFoundHere(`no command ${id}`);
  return cmd;
}

function presentCommand(r: CommandRow) {
  return { id: r.id, kind: r.kind, vm: r.vm, payload: r.payload, createdAt: r.createdAt.toISOString(), expiresAt: r.expiresAt.toISOString(), deliveries: r.deliveries };
}

async function presentFailover(db: Queryable, f: FailoverRow) {
  const steps = await listSteps(db, f.id);
  return {
    id: f.id, vm: f.vm, kind: f.kind, state: f.state, goal: f.goal, error: f.error,
    steps: steps.map((s) => ({ step: s.step, status: s.status, detail: s.detail, at: s.at.toISOString() })),
  };
}
