/**
 * What the agent endpoint offers for reverse replication (agent protocol §14, §15): registering the
 * agent's envelope keys, the reverse status of a VM, its disks' reverse logs with download grants,
 * and the agent's report of what it applied. Every VM is looked up within the certificate's tenant
 * (another tenant's VM is a missing one: 404) and checked for trust group, as forward routes are.
 */
import { calculateJwkThumbprint } from 'jose';
import type { AgentIdentity } from '../agent-api/auth.js';
import type { Queryable } from '../catalog/db.js';
import type { ReverseDiskRow } from '../catalog/reverse.js';
import { getReverseDisk, listEnvelopeKeys, listReverseDisks, listReverseLogs, recordReverseApplied, registerEnvelopeKey, reverseBacklog } from '../catalog/reverse.js';
import type { ServiceContext } from '../context.js';
import { ErrConflict, ErrNotFoundHere } from '../errors.js';
import { vmForAgent } from '../replication/scope.js';
import { ErrInvalidArgument } from '../../shared/errors.js';
import type { ReverseDisk } from '../../shared/protocol/schemas.js';

type PublicJwk = { kty: 'OKP'; crv: 'X25519'; x: string; kid?: string | undefined } | { kty: 'EC'; crv: 'P-256'; x: string; y: string; kid?: string | undefined };

/** §14.1: records the key under its RFC 7638 thumbprint; a kid that is not the thumbprint is refused. */
export async function registerAgentKey(db: Queryable, agent: AgentIdentity, jwk: PublicJwk) {
  const { kid: given, ...bare } = jwk;
  const kid = await calculateJwkThumbprint(bare, 'sha256');
  if (given !== undefined && given !== kid) throw ErrInvalidArgument(`jwk.kid ${given} is not the key's RFC 7638 thumbprint ${kid}`);
  await registerEnvelopeKey(db, agent.tenant, agent.fqdn, kid, { ...bare, kid } as Record<string, string>);
  const keys = await listEnvelopeKeys(db, agent.tenant, agent.fqdn);
  const row = keys.find((k) => k.kid === kid)!;
  return { kid, registeredAt: row.registeredAt.toISOString(), newest: keys[0]!.kid === kid };
}

/** §14.2 */
export async function agentKeys(db: Queryable, agent: AgentIdentity) {
  const keys = await listEnvelopeKeys(db, agent.tenant, agent.fqdn);
  return { keys: keys.map((k, i) => ({ kid: k.kid, registeredAt: k.registeredAt.toISOString(), newest: i === 0 })) };
}

export async function presentReverseDisk(db: Queryable, d: ReverseDiskRow): Promise<ReverseDisk> {
  const backlog = await reverseBacklog(db, d);
  return {
    disk: d.disk, failover: d.failoverId, generation: d.generation, latestSequence: d.nextSequence - 1,
    appliedGeneration: d.appliedGeneration, appliedSequence: d.appliedSequence, appliedAt: d.appliedAt?.toISOString() ?? null,
    pendingLogs: backlog.pendingLogs, pendingBytes: backlog.pendingBytes, lastCapturedAt: backlog.lastCapturedAt?.toISOString() ?? null,
  };
}

/** §15.1 */
export async function reverseStatus(db: Queryable, agent: AgentIdentity, vmName: string) {
  const vm = await vmForAgent(db, agent, vmName);
  const disks = await listReverseDisks(db, vm.tenant, vm.name);
  return { vm: vm.name, disks: await Promise.all(disks.map((d) => presentReverseDisk(db, d))) };
}

async function reverseDiskForAgent(db: Queryable, agent: AgentIdentity, vmName: string, disk: string): Promise<ReverseDiskRow> {
  const vm = await vmForAgent(db, agent, vmName);
  const row = await getReverseDisk(db, vm.tenant, vm.name, disk);
  if (!row) throw ErrNotFoundHere(`VM ${vmName} has no reverse replication of disk ${disk}`);
  return row;
}

/** §15.2: the logs after (generation, after), each with a GET grant of its object. */
export async function reverseLogs(ctx: ServiceContext, agent: AgentIdentity, vmName: string, disk: string, q: { generation: number; after: number; limit: number }) {
  const d = await reverseDiskForAgent(ctx.db, agent, vmName, disk);
  const rows = await listReverseLogs(ctx.db, d.tenant, d.vm, d.disk, { generation: q.generation, sequence: q.after }, q.limit);
  const logs = [];
  for (const r of rows) {
    const g = await ctx.store.grant(r.key, { operation: 'get', expiresIn: ctx.config.grantSeconds });
    logs.push({
      generation: r.generation, sequence: r.sequence, kind: r.kind, key: r.key, size: r.size, sha256: r.sha256, kid: r.kid,
      cycle: r.cycle, capturedAt: r.capturedAt.toISOString(), dataBytes: r.dataBytes,
      get: { url: g.url, method: 'GET' as const, headers: g.headers, expiresAt: g.expiresAt.toISOString() },
    });
  }
  return { disk: d.disk, logs };
}

/** §15.3: what the agent applied; a log the service never wrote is refused. */
export async function reverseApplied(db: Queryable, agent: AgentIdentity, vmName: string, disk: string, body: { generation: number; sequence: number }) {
  const d = await reverseDiskForAgent(db, agent, vmName, disk);
  const known = await listReverseLogs(db, d.tenant, d.vm, d.disk, { generation: body.generation, sequence: body.sequence - 1 }, 1);
  if (known[0]?.generation !== body.generation || known[0].sequence !== body.sequence) {
    throw ErrConflict('no_such_log', `disk ${disk} has no reverse log ${body.generation}/${body.sequence}`);
  }
  await recordReverseApplied(db, d.tenant, d.vm, d.disk, body.generation, body.sequence);
  return presentReverseDisk(db, (await getReverseDisk(db, d.tenant, d.vm, d.disk))!);
}
