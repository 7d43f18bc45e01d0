/**
 * Ships a sealed object: grant, upload (within the VM's bandwidth limit when one is set), commit, retried with
 * backoff. Re-shipping after a crash sends the same bytes; a commit the service already recorded
 * answers "duplicate", which is success. An object held in memory (a chunk) that a crash lost is only
 * committed again (see InflightObject); when the service has no such object, LostObject is thrown
 * and the caller seals it anew.
 */
import { createReadStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { LifeboatError } from '../../shared/errors.js';
import type { InflightObject } from '../state/schema.js';
import { paced, uploadLimit } from '../transport/bandwidth.js';
import type { CommitStatus, GrantRequest, ObjectCommit } from '../transport/types.js';
import type { EngineContext } from './context.js';
import { withRetry } from './retry.js';

export class LostObject extends Error {}

export async function shipInflight(ctx: EngineContext, vm: string, disk: string, o: InflightObject, bandwidth: number | null, body?: Buffer[]): Promise<CommitStatus> {
  const request: GrantRequest = o.kind === 'log'
    ? { kind: 'log', generation: o.generation, sequence: o.number }
    : { kind: 'chunk', generation: o.generation, index: o.number };
  const retry = ctx.retry ?? {};
  const grant = await withRetry(() => ctx.transport.grant(vm, disk, request), retry);
  if (o.size > grant.maxSize) throw new LifeboatError('too_large', `${vm}/${disk}: ${o.kind} ${o.number} is ${o.size} bytes, over the service's limit of ${grant.maxSize}`);
  const source = body ? () => Readable.from(body) : o.spool ? () => createReadStream(o.spool, { highWaterMark: 1 << 20 }) : undefined;
  if (source) await withRetry(async () => {
    try {
      await ctx.transport.upload(grant, paced(source(), uploadLimit(`${ctx.state.dir}\0${vm}`, bandwidth)), o.size);
    } catch (err) {
      // Uploaded and committed before a crash: the store keeps the first copy; the commit decides.
      if (err instanceof LifeboatError && (err.code === 'already_exists' || err.code === 'conflict')) return;
      throw err;
    }
  }, retry);
  // A log's commit names its cycle (agent protocol §10); an older agent's inflight log has none.
  const cycle = o.kind === 'log' && o.cycle !== null && o.capturedAt !== null ? { cycle: o.cycle, capturedAt: o.capturedAt } : {};
  const commit: ObjectCommit & { cycle?: number; capturedAt?: string } = { generation: o.generation, key: grant.key, size: o.size, sha256: o.sha256, consistency: o.consistency, createdAt: o.createdAt, ...cycle };
  let status: CommitStatus;
  try {
    status = await withRetry(() => (o.kind === 'log'
      ? ctx.transport.commitLog(vm, disk, { ...commit, sequence: o.number })
      : ctx.transport.commitChunk(vm, disk, { ...commit, index: o.number })), retry);
  } catch (err) {
    if (!source && err instanceof LifeboatError && err.code === 'corrupt') throw new LostObject(`${o.kind} ${o.number} was not stored before the agent stopped`);
    throw err;
  }
  if (o.spool) await rm(o.spool, { force: true });
  return status;
}
