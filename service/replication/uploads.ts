/**
 * Upload grants and commits (agent protocol §7, §8, §10). Keys are made by
 * shared/objectstore/keys.ts from validated ids, never taken from the agent; a commit must name the
 * key the service would grant. A commit (of a log or a base's chunk) is recorded once (a repeat is a
 * harmless duplicate) and a merge of its disk is enqueued.
 */
import { chunkKey, logKey, manifestKey, parseKey } from '../../shared/objectstore/keys.js';
import { LifeboatError, isLifeboatError } from '../../shared/errors.js';
import type { AgentIdentity } from '../agent-api/auth.js';
import type { ChunkBody, CommitBody, GrantBody, InitialBody } from '../../shared/protocol/schemas.js';
import { MaxChunkBytes, MaxLogBytes, MaxManifestBytes } from '../../shared/protocol/schemas.js';
import type { Queryable } from '../catalog/db.js';
import { getLog, insertLog } from '../catalog/logs.js';
import { checkReplicaQuota } from '../usage/quotas.js';
import type { DiskRow } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import { ErrConflict, ServiceError } from '../errors.js';
import { diskForAgent } from './scope.js';

/**
 * Enqueues the merge of one disk (BullMQ in the service; tests may call merge directly). cause says
 * what was just committed: a log, a base's chunk (its layer is built while the rest arrive) or a
 * completed base; the queue does not care, tests that act on a commit may.
 */
export type EnqueueMerge = (ref: { tenant: string; vm: string; disk: string }, cause?: 'log' | 'chunk' | 'base') => Promise<void>;

function staleCheck(disk: DiskRow, generation: number): void {
  if (disk.baseComplete && generation < disk.generation) {
    throw ErrConflict('stale_generation', `generation ${generation} is older than generation ${disk.generation}, whose base is complete`);
  }
}

/**
 * The upload route's check before it stores a granted object: a log or chunk already committed is
 * never overwritten (agent protocol §7.1: objects are write-once), even through a grant still valid.
 * 409 conflict, reason already_committed: an agent re-shipping after a lost answer goes on to commit.
 */
export async function refuseCommittedObject(db: Queryable, key: string): Promise<void> {
  const k = parseKey(key);
  // Manifests are rewritten by design; reverse logs are written by the service itself, never granted.
  if (k.kind !== 'log' && k.kind !== 'chunk') return;
  const row = await getLog(db, k.tenant, k.vm, k.disk, k.kind, k.generation, k.kind === 'log' ? k.sequence : k.index);
  if (row) throw ErrConflict('already_committed', `${k.kind} ${k.kind === 'log' ? k.sequence : k.index} of generation ${k.generation} is committed; a committed object is never overwritten`);
}

export async function grantUpload(ctx: ServiceContext, agent: AgentIdentity, vm: string, diskId: string, body: GrantBody) {
  const { disk } = await diskForAgent(ctx.db, agent, vm, diskId);
  staleCheck(disk, body.generation);
  const ref = { tenant: agent.tenant, vm, disk: diskId };
  const [key, maxSize] = body.kind === 'log' ? [logKey(ref, body.generation, body.sequence), MaxLogBytes]
    : body.kind === 'chunk' ? [chunkKey(ref, body.generation, body.index), MaxChunkBytes]
      : [manifestKey(ref, body.generation), MaxManifestBytes];
  const grant = await ctx.store.grant(key, { operation: 'put', expiresIn: ctx.config.grantSeconds });
  return { url: grant.url, method: grant.method, headers: grant.headers, expiresAt: grant.expiresAt.toISOString(), key, maxSize };
}

/** Checks the object exists with the committed size. */
async function checkObject(ctx: ServiceContext, key: string, size: number, max: number): Promise<void> {
  if (size > max) throw new LifeboatError('too_large', `object of ${size} bytes is larger than ${max}`);
  let info;
  try {
    info = await ctx.store.head(key);
  } catch (err) {
    if (isLifeboatError(err) && err.code === 'not_found') throw new ServiceError('corrupt', `object ${key} was not uploaded`, 'object_missing');
    throw err;
  }
  if (info.size !== size) throw new ServiceError('corrupt', `object ${key} holds ${info.size} bytes, the commit says ${size}`, 'size_mismatch');
}

async function record(tx: Queryable, row: Parameters<typeof insertLog>[1]): Promise<'accepted' | 'duplicate'> {
  const { inserted, row: existing } = await insertLog(tx, row);
  if (inserted) return 'accepted';
  if (existing.key === row.key && existing.size === row.size && existing.sha256 === row.sha256 && existing.cycle === (row.cycle ?? null)) return 'duplicate';
  throw ErrConflict('commit_differs', `${row.kind} ${row.generation}/${row.sequence} was committed before with another size, digest or cycle`);
}

export async function commitLog(ctx: ServiceContext, enqueue: EnqueueMerge, agent: AgentIdentity, vm: string, diskId: string, body: CommitBody) {
  const ref = { tenant: agent.tenant, vm, disk: diskId };
  const { disk } = await diskForAgent(ctx.db, agent, vm, diskId);
  staleCheck(disk, body.generation);
  if (body.key !== logKey(ref, body.generation, body.sequence)) throw new LifeboatError('invalid_argument', `key must be ${logKey(ref, body.generation, body.sequence)}`);
  await checkObject(ctx, body.key, body.size, MaxLogBytes);
  await checkReplicaQuota(ctx.db, ctx.log, agent.tenant, false);
  const status = await record(ctx.db, { ...ref, kind: 'log', generation: body.generation, sequence: body.sequence, key: body.key, size: body.size, sha256: body.sha256, consistency: body.consistency, createdAt: new Date(body.createdAt),
    cycle: body.cycle ?? null, capturedAt: body.capturedAt === undefined ? null : new Date(body.capturedAt) });
  ctx.metrics.commits.inc({ status });
  await enqueue(ref);
  return { status, generation: body.generation, sequence: body.sequence };
}

export async function commitChunk(ctx: ServiceContext, enqueue: EnqueueMerge, agent: AgentIdentity, vm: string, diskId: string, body: ChunkBody) {
  const ref = { tenant: agent.tenant, vm, disk: diskId };
  const { disk } = await diskForAgent(ctx.db, agent, vm, diskId);
  staleCheck(disk, body.generation);
  if (body.key !== chunkKey(ref, body.generation, body.index)) throw new LifeboatError('invalid_argument', `key must be ${chunkKey(ref, body.generation, body.index)}`);
  await checkObject(ctx, body.key, body.size, MaxChunkBytes);
  // A replica that never had a complete base is a new one: over the storage quota its copy is refused.
  await checkReplicaQuota(ctx.db, ctx.log, agent.tenant, !disk.baseComplete);
  const status = await record(ctx.db, { ...ref, kind: 'chunk', generation: body.generation, sequence: body.index, key: body.key, size: body.size, sha256: body.sha256, consistency: 'crash', createdAt: new Date(body.createdAt) });
  // A full base's chunks are written into its new layer as they come (workers/base-ahead.ts).
  await enqueue(ref, 'chunk');
  return { status, generation: body.generation, index: body.index };
}

export async function completeInitial(ctx: ServiceContext, enqueue: EnqueueMerge, agent: AgentIdentity, vm: string, diskId: string, body: InitialBody) {
  const ref = { tenant: agent.tenant, vm, disk: diskId };
  const status = await ctx.db.transaction(async (tx) => {
    const { disk } = await diskForAgent(tx, agent, vm, diskId, { forUpdate: true });
    staleCheck(disk, body.generation);
    if (disk.baseComplete && body.generation === disk.generation) return 'duplicate' as const;
    const have = await tx.query<{ n: number }>(`SELECT count(*)::int8 AS n FROM logs WHERE tenant = $1 AND vm = $2 AND disk = $3 AND kind = 'chunk' AND generation = $4 AND sequence < $5`,
      [agent.tenant, vm, diskId, body.generation, body.chunkCount]);
    if (have[0]!.n < body.chunkCount) {
      const missing = await firstMissingChunk(tx, ref, body.generation, body.chunkCount);
      throw ErrConflict('chunks_missing', `chunk ${missing} of generation ${body.generation} was not committed`);
    }
    const ins = await tx.query(`INSERT INTO bases (tenant, vm, disk, generation, mode, chunk_count, consistency, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)
      ON CONFLICT DO NOTHING RETURNING generation`, [agent.tenant, vm, diskId, body.generation, body.mode, body.chunkCount, body.consistency, new Date(body.createdAt)]);
    return ins.length > 0 ? 'accepted' as const : 'duplicate' as const;
  });
  await enqueue(ref);
  return { status, generation: body.generation };
}

async function firstMissingChunk(tx: Queryable, ref: { tenant: string; vm: string; disk: string }, generation: number, count: number): Promise<number> {
  const rows = await tx.query<{ sequence: number }>(`SELECT sequence FROM logs WHERE tenant = $1 AND vm = $2 AND disk = $3 AND kind = 'chunk' AND generation = $4 AND sequence < $5 ORDER BY sequence`,
    [ref.tenant, ref.vm, ref.disk, generation, count]);
  let i = 0;
  for (const r of rows) {
    if (r.sequence !== i) break;
    i++;
  }
  return i;
}
