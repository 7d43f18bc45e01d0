/**
 * Applying reverse logs (docs/reverse.md, agent protocol §15): one pass over a VM's reversed disks
 * lists the logs after what was applied, and applies each in order to the disk (the original, or
 * a copy in a target directory made once), through the merge worker's staging (shared/log/stage.ts):
 * the envelope, every frame, the .hrl trailer, the header's names and the object's size and SHA-256
 * are verified whole before a byte reaches the disk. Ordering is the forward rule: within a generation
 * sequence n after n − 1, a gap waits, what was applied is skipped; a newer generation starts at its
 * sequence 1, a delta.
 *
 * State: `vms/<vm>/reverse.json` (atomic): per disk the path logs go to and the last applied
 * (generation, sequence). A log is written, the disk flushed, then the state recorded; killed between,
 * the same log is applied again on the next pass (the same bytes at the same offsets).
 * Failure: a log that fails verification is refused (`tampered`/`corrupt`) with nothing of it written,
 * and the pass stops there, naming the log; service errors throw as they come.
 */
import { mkdir } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import { z } from 'zod';
import type { PrivateJwk } from '../../shared/crypto/keys.js';
import type { DiskImage } from '../../shared/disk/index.js';
import { openDisk } from '../../shared/disk/index.js';
import { convertDisk } from '../../shared/disk/ops/index.js';
import { ErrInvalidArgument, ErrTampered, LifeboatError } from '../../shared/errors.js';
import { applyStaged, discardStaged, stageLog } from '../../shared/log/stage.js';
import type { ReverseLog } from '../../shared/protocol/schemas.js';
import { readJsonFile, writeJsonAtomic } from '../state/atomic.js';
import type { AgentState, IdentityFiles } from '../state/store.js';
import type { ReverseClient } from './client.js';
import { loadEnvelopeKeys } from './keys.js';

export const ReverseStateFile = 'reverse.json';
const reverseStateSchema = z.strictObject({
  version: z.literal(1),
  disks: z.record(z.string(), z.strictObject({
    /** The disk the tenant named (--disk). */
    source: z.string(),
    /** Where logs are applied: the source, or its copy in the target directory. */
    path: z.string(),
    generation: z.number().int().min(0),
    sequence: z.number().int().min(0),
    appliedAt: z.string().nullable(),
    appliedBytes: z.number().int().min(0),
    /**
     * Every range the logs of this generation wrote or zeroed, merged, as [offset, length] (absent in a
     * state written before failback existed: read as none). Failback's equality check digests them.
     */
    ranges: z.array(z.tuple([z.number().int().min(0), z.number().int().min(1)])).optional(),
    /** The capture time at the hoster of the last applied log (status: reverse lag = now − it). Absent before the first, or in an older state. */
    capturedAt: z.string().optional(),
    /** Bytes of the log objects received and applied (sealed, compressed: what came over the network). */
    receivedBytes: z.number().int().min(0).optional(),
    /** Logs the service listed after what was applied, at the end of the last pass, and when that pass ended. */
    pendingLogs: z.number().int().min(0).optional(),
    checkedAt: z.string().optional(),
  })),
});
export type ReverseState = z.infer<typeof reverseStateSchema>;

export interface ReverseApplyOptions {
  state: AgentState;
  files: IdentityFiles;
  client: Pick<ReverseClient, 'status' | 'logs' | 'download' | 'applied'>;
  vm: string;
  /** The VM's disks in order (the first is disk 0). */
  disks: string[];
  /** Apply to copies made in this directory instead of the disks themselves. */
  targetDir?: string;
  /** Called after each log applied (progress). */
  onApplied?: (e: { disk: string; generation: number; sequence: number; bytes: number; path: string }) => void;
}

export interface ReverseDiskPass {
  disk: string;
  path: string;
  generation: number;
  sequence: number;
  appliedLogs: number;
  appliedBytes: number;
  /** Logs the service lists after what is applied now (0: caught up). */
  pendingLogs: number;
  /** Why the pass stopped before the newest log (a gap), if it did. */
  waiting: string | null;
}

export async function readReverseState(state: AgentState, vm: string): Promise<ReverseState> {
  const path = join(state.vmDir(vm), ReverseStateFile);
  const raw = await readJsonFile(path);
  if (raw === undefined) return { version: 1, disks: {} };
  const parsed = reverseStateSchema.safeParse(raw);
  if (!parsed.success) throw new LifeboatError('corrupt', `${path}: state file is invalid: ${parsed.error.issues[0]?.message ?? 'schema mismatch'}; fix or remove it by hand, the agent will not reset it`);
  return parsed.data;
}

async function writeReverseState(state: AgentState, vm: string, s: ReverseState): Promise<void> {
  await mkdir(state.vmDir(vm), { recursive: true, mode: 0o700 });
  await writeJsonAtomic(join(state.vmDir(vm), ReverseStateFile), s);
}

/** The VM's disk ids in order: as protected on this agent, else as the service lists the reversed disks. */
async function diskIds(o: ReverseApplyOptions): Promise<string[]> {
  const config = await o.state.findConfig(o.vm);
  const ids = config ? config.disks.map((d) => d.id) : (await o.client.status(o.vm)).disks.map((d) => d.disk);
  if (ids.length !== o.disks.length) {
    throw ErrInvalidArgument(`VM ${o.vm} has ${ids.length} disk(s) (${ids.join(', ') || 'none reversed yet'}); ${o.disks.length} --disk given`);
  }
  return ids;
}

/** The path logs go to: the disk, or its copy in the target directory (made once, then reused). */
async function targetFor(o: ReverseApplyOptions, s: ReverseState, disk: string, source: string): Promise<string> {
  const known = s.disks[disk];
  if (known) {
    if (known.source !== source) throw ErrInvalidArgument(`disk ${disk} of VM ${o.vm} was reversed into ${known.path} from ${known.source}, not ${source}`);
    return known.path;
  }
  let path = source;
  if (o.targetDir) {
    path = join(o.targetDir, `${disk}${extname(source) || '.img'}`);
    const src = await openDisk(source, { readOnly: true });
    try {
      await convertDisk(src, path, src.format).catch((err: unknown) => {
        // A copy finished by a pass killed before it recorded it is used as it is.
        if (err instanceof LifeboatError && err.code === 'already_exists') return;
        throw err;
      });
    } finally {
      await src.close();
    }
  }
  s.disks[disk] = { source, path, generation: 0, sequence: 0, appliedAt: null, appliedBytes: 0 };
  await writeReverseState(o.state, o.vm, s);
  return path;
}

/** Applies every log the service has now, disk by disk. */
export async function applyReverse(o: ReverseApplyOptions): Promise<ReverseDiskPass[]> {
  const ids = await diskIds(o);
  const s = await readReverseState(o.state, o.vm);
  let keys: Map<string, PrivateJwk> | undefined;
  const passes: ReverseDiskPass[] = [];
  for (const [i, disk] of ids.entries()) {
    const path = await targetFor(o, s, disk, o.disks[i]!);
    const pass: ReverseDiskPass = { disk, path, generation: 0, sequence: 0, appliedLogs: 0, appliedBytes: 0, pendingLogs: 0, waiting: null };
    let image: DiskImage | undefined;
    try {
      for (;;) {
        const at = s.disks[disk]!;
        const { logs } = await o.client.logs(o.vm, disk, { generation: at.generation, sequence: at.sequence });
        const next = logs[0];
        if (!next) break;
        const expected = next.generation === at.generation ? at.sequence + 1 : 1;
        if (next.sequence !== expected) {
          pass.waiting = `log ${next.generation}/${next.sequence} waits for ${next.generation}/${expected}`;
          pass.pendingLogs = logs.length;
          break;
        }
        keys ??= await loadEnvelopeKeys(o.state.dir);
        image ??= await openDisk(path);
        // A new generation's delta covers every write since the failover: its ranges start afresh.
        const ranges = next.generation === at.generation ? [...(at.ranges ?? [])] : [];
        await applyOne(o, disk, next, image, keys, (offset, length) => addRange(ranges, offset, length));
        at.ranges = ranges;
        at.generation = next.generation;
        at.sequence = next.sequence;
        at.appliedAt = new Date().toISOString();
        at.appliedBytes += next.dataBytes;
        at.capturedAt = next.capturedAt;
        at.receivedBytes = (at.receivedBytes ?? 0) + next.size;
        await writeReverseState(o.state, o.vm, s);
        pass.appliedLogs++;
        pass.appliedBytes += next.dataBytes;
        o.onApplied?.({ disk, generation: next.generation, sequence: next.sequence, bytes: next.dataBytes, path });
        await o.client.applied(o.vm, disk, next.generation, next.sequence);
      }
    } finally {
      await image?.close();
    }
    const at = s.disks[disk]!;
    pass.generation = at.generation;
    pass.sequence = at.sequence;
    at.pendingLogs = pass.pendingLogs;
    at.checkedAt = new Date().toISOString();
    await writeReverseState(o.state, o.vm, s);
    passes.push(pass);
  }
  return passes;
}

/** Downloads, verifies whole, then writes one log and flushes the disk. */
async function applyOne(o: ReverseApplyOptions, disk: string, log: ReverseLog, image: DiskImage, keys: Map<string, PrivateJwk>,
  onRange: (offset: number, length: number) => void): Promise<void> {
  const name = `reverse log ${o.vm}/${disk} ${log.generation}/${log.sequence}`;
  const key = keys.get(log.kid);
  if (!key) throw new LifeboatError('not_found', `${name} is sealed to envelope key ${log.kid}, which this agent does not hold (state ${o.state.dir}); it cannot be opened`);
  const object = await o.client.download(log);
  let staged;
  try {
    staged = await stageLog({
      object, key, sha256: log.sha256, size: log.size,
      expect: { tenant: o.files.identity.tenant, vm: o.vm, disk, generation: log.generation, sequence: log.sequence, cycle: log.cycle },
    }, join(o.state.vmDir(o.vm), `.reverse-staging-${disk}-${log.generation}-${log.sequence}`));
  } catch (err) {
    object.destroy();
    if (err instanceof LifeboatError) throw new LifeboatError(err.code, `${name} refused, nothing of it applied: ${err.message}`, { cause: err });
    throw err;
  }
  try {
    const kind = log.sequence === 1 ? 'delta' : 'incremental';
    if (staged.header.kind !== kind || log.kind !== kind) throw ErrTampered(`${name} refused, nothing of it applied: it is a ${staged.header.kind} log, sequence ${log.sequence} must be ${kind}`);
    if (staged.header.virtualSize > image.virtualSize) {
      throw ErrInvalidArgument(`${name}: the disk at the hoster is ${staged.header.virtualSize} bytes, ${basename(image.path)} only ${image.virtualSize}: grow it first`);
    }
    await applyStaged(staged, image, undefined, onRange);
    await image.flush();
  } finally {
    await discardStaged(staged);
  }
}

/** Adds [offset, offset+length) to a sorted list of disjoint ranges, merging what it overlaps or touches. */
export function addRange(ranges: [number, number][], offset: number, length: number): void {
  let start = offset;
  let end = offset + length;
  let i = 0;
  while (i < ranges.length && ranges[i]![0] + ranges[i]![1] < start) i++;
  let j = i;
  while (j < ranges.length && ranges[j]![0] <= end) {
    start = Math.min(start, ranges[j]![0]);
    end = Math.max(end, ranges[j]![0] + ranges[j]![1]);
    j++;
  }
  ranges.splice(i, j - i, [start, end - start]);
}
