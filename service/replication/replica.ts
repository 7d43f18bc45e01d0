/**
 * A replica disk on replica storage: `<storage>/<tenant>/<vm>/<disk>/` holding the layers of its
 * chain and `state.json`, the applied state. The state file is written atomically (temporary file,
 * fsync, rename, fsync of the directory) after the layer it describes is durable, so after a crash it
 * is the authority and the catalog is made to follow it.
 */
import { mkdir, open, readFile, readdir, rename, rm } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { z } from 'zod';
import { ErrCorrupt, ErrInvalidArgument } from '../../shared/errors.js';
import { idPattern } from '../http/json.js';

export const StateFileName = 'state.json';

export const appliedStateSchema = z.strictObject({
  version: z.literal(1),
  generation: z.number().int().min(0),
  baseComplete: z.boolean(),
  appliedSequence: z.number().int().min(0),
  /**
   * The VM cycle of the last log (or base) applied: the replica holds the disk as of that cycle. Null
   * when that log had none (a version-1 log is its own cycle) and in a state written before cycles.
   */
  appliedCycle: z.number().int().min(1).nullable().default(null),
  state: z.enum(['initial_required', 'initial_in_progress', 'replicating', 'resync_required']),
  resyncReason: z.string().nullable(),
  /** Layer files of the chain, base first; the last is the writable top. */
  layers: z.array(z.string().regex(/^[a-z0-9_.-]+$/)).min(1),
  /** Recovery points, oldest first: each names the frozen layer that ends its chain. */
  points: z.array(z.strictObject({
    name: z.string().regex(/^p[0-9]+$/),
    layer: z.string().regex(/^[a-z0-9_.-]+$/),
    createdAt: z.string(),
    consistency: z.enum(['crash', 'application']),
    /** The VM cycle the point holds on every disk (null: made from version-1 logs). */
    cycle: z.number().int().min(1).nullable().default(null),
  })).default([]),
  /** The last merge's fencing token, so a stale worker's write is recognisable. */
  fence: z.number().int().min(0),
  updatedAt: z.string(),
});
export type AppliedState = z.infer<typeof appliedStateSchema>;

/** The replica directory of a disk; ids are validated again here so no path leaves storage. */
export function replicaDir(storage: string, tenant: string, vm: string, disk: string): string {
  for (const [what, id] of [['tenant', tenant], ['vm', vm], ['disk', disk]] as const) {
    if (!idPattern.test(id)) throw ErrInvalidArgument(`invalid ${what} id ${JSON.stringify(id.slice(0, 80))}`);
  }
  const root = resolve(storage);
  const dir = resolve(root, tenant, vm, disk);
  if (!dir.startsWith(root + sep)) throw ErrInvalidArgument(`replica path escapes ${root}`);
  return dir;
}

/** Replica disks are dynamic VHDX; 'raw' stands in where a VHDX chain is not needed (tests, no VHDX yet). */
export type ReplicaFormat = 'vhdx' | 'raw';

export function initialState(format: ReplicaFormat): AppliedState {
  return { version: 1, generation: 0, baseComplete: false, appliedSequence: 0, appliedCycle: null, state: 'initial_required', resyncReason: null, layers: [`base.${format}`], points: [], fence: 0, updatedAt: new Date().toISOString() };
}

export async function readState(dir: string): Promise<AppliedState> {
  const path = join(dir, StateFileName);
  const text = await readFile(path, 'utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw ErrCorrupt(`${path}: not JSON`);
  }
  const r = appliedStateSchema.safeParse(json);
  if (!r.success) throw ErrCorrupt(`${path}: ${r.error.issues[0]!.path.join('.')}: ${r.error.issues[0]!.message}`);
  return r.data;
}

/** Replaces state.json atomically and durably. */
export async function writeState(dir: string, state: AppliedState): Promise<void> {
  await installState(dir, await prepareState(dir, state));
}

/**
 * First half of writeState: the new state in a temporary file beside state.json, written and
 * fsynced; returns its path. The caller installs it (installState) or removes it.
 */
export async function prepareState(dir: string, state: AppliedState): Promise<string> {
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `${StateFileName}.tmp-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`);
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(`${JSON.stringify({ ...state, updatedAt: new Date().toISOString() }, null, 2)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return tmp;
}

/** Second half: renames a prepared file over state.json and fsyncs the directory. */
export async function installState(dir: string, tmp: string): Promise<void> {
  await rename(tmp, join(dir, StateFileName));
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** Names of the layer files the service makes: base.<fmt>, base-g<generation>.<fmt>, p<ms>.vhdx. */
const LayerFile = /^(base|base-g\d+|p\d+)\.(vhdx|raw)$/;

/** A state file prepared and never installed (prepareState's names). */
const PreparedStateFile = /^state\.json\.tmp-[0-9a-z-]+$/;

/** The record beside a full base's layer whose chunks are written ahead of its completion (workers/base-ahead.ts), and its temporary file. */
const AheadFile = /^(base-g(\d+)\.(vhdx|raw))\.ahead(\.tmp)?$/;

/**
 * Deletes the layer files in a replica directory that state.json does not name: left by a worker
 * killed after making a layer and before state.json named it (a point's new top, a base being
 * built), or after state.json dropped one and before it was deleted (a prune, a new base). Also the
 * state files a killed worker prepared and never installed. Kept: the layer of a full base still
 * arriving that has its record (`base-g<N>.<fmt>.ahead`, N newer than the state's generation): its
 * chunks so far are in it and the base goes on from there. Records whose layer is not kept go too.
 * Only with the disk's lock held (the directory's kernel lock with it), before anything new is made:
 * every layer and prepared state is made and dropped under it, so none of them belongs to a live
 * holder. Returns the names deleted.
 */
export async function sweepUnreferencedLayers(dir: string, state: AppliedState): Promise<string[]> {
  const named = new Set(state.layers);
  const files = await readdir(dir);
  const ahead = new Set(files.flatMap((f) => {
    const m = AheadFile.exec(f);
    const generation = m ? Number(m[2]) : -1;
    return m && !m[4] && !named.has(m[1]!) && files.includes(m[1]!) && (generation > state.generation || (generation === state.generation && !state.baseComplete)) ? [m[1]!] : [];
  }));
  const stray = files.filter((f) => (LayerFile.test(f) && !named.has(f) && !ahead.has(f)) || PreparedStateFile.test(f) || (AheadFile.test(f) && !ahead.has(AheadFile.exec(f)![1]!)));
  for (const f of stray) await rm(join(dir, f), { force: true });
  return stray;
}
