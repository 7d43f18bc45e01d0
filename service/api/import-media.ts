/**
 * import-media: loads one disk's base from external media (docs/formats/agent-media.md) into the
 * object store and the catalog exactly as if the agent had uploaded and committed its chunks
 * (agent protocol §8): the same keys, `logs` rows of kind chunk, one `bases` row, a merge enqueued.
 * The media is read by the service on its own host (like export writes there). Every chunk's size and
 * SHA-256 are checked against the manifest before anything is stored or recorded; the merge then
 * checks each chunk's envelope and header as for an upload. Re-running is idempotent.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { LifeboatError } from '../../shared/errors.js';
import { chunkKey } from '../../shared/objectstore/keys.js';
import { MaxChunkBytes, MaxGeneration, MaxManifestBytes, MaxVirtualSize } from '../../shared/protocol/schemas.js';
import { insertLog } from '../catalog/logs.js';
import { getDisk, getVm } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import { ErrConflict } from '../errors.js';
import { idPattern } from '../http/json.js';
import type { EnqueueMerge } from '../replication/uploads.js';
import { checkTenantName } from './operations.js';

export const MaxMediaChunks = 2 ** 24;

export const importMediaSchema = z.strictObject({
  dir: z.string().min(1).max(4096).refine(isAbsolute, 'must be an absolute path on the service host'),
  vm: z.string().regex(idPattern, 'must be a VM id'),
  disk: z.string().regex(idPattern, 'must be a disk id'),
  generation: z.number().int().min(1).max(MaxGeneration),
});
export type ImportMediaBody = z.infer<typeof importMediaSchema>;

const sha256 = z.string().regex(/^[0-9a-f]{64}$/);
/** Unknown fields are ignored (format rule); every known one is bounded. */
const manifestSchema = z.object({
  version: z.literal(1),
  tenant: z.string().max(64), vm: z.string().max(64), disk: z.string().max(64),
  generation: z.number().int().min(1).max(MaxGeneration),
  mode: z.enum(['full', 'delta']),
  chunkCount: z.number().int().min(0).max(MaxMediaChunks),
  virtualSize: z.number().int().min(0).max(MaxVirtualSize),
  complete: z.boolean(),
  chunks: z.array(z.object({
    index: z.number().int().min(0).max(MaxMediaChunks - 1),
    file: z.string().max(64),
    size: z.number().int().min(0).max(MaxChunkBytes),
    sha256,
    createdAt: z.string().max(64).refine((s) => !Number.isNaN(Date.parse(s))),
  })).max(MaxMediaChunks),
});
export type MediaManifest = z.infer<typeof manifestSchema>;

const hex16 = (n: number) => n.toString(16).padStart(16, '0');

/** DIR/lifeboat-media/<tenant>/<vm>/<disk>/<generation 016x>: where one base lies on the media. */
export function mediaBaseDir(dir: string, tenant: string, vm: string, disk: string, generation: number): string {
  return join(dir, 'lifeboat-media', tenant, vm, disk, hex16(generation));
}

/** Reads and checks a manifest: bounded, well-formed, naming exactly this tenant, VM, disk and generation, complete. */
export async function readMediaManifest(baseDir: string, want: { tenant: string; vm: string; disk: string; generation: number }): Promise<MediaManifest> {
  const path = join(baseDir, 'manifest.json');
  let text: string;
  try {
    if ((await stat(path)).size > MaxManifestBytes) throw new LifeboatError('corrupt', `${path} is larger than ${MaxManifestBytes} bytes`);
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new LifeboatError('not_found', `no media manifest ${path}`);
    throw err;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new LifeboatError('corrupt', `${path} is not JSON`);
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new LifeboatError(issue.path[0] === 'version' || issue.path[0] === 'mode' ? 'unsupported' : 'corrupt', `${path}: ${issue.path.join('.') || 'manifest'}: ${issue.message}`);
  }
  const m = parsed.data;
  if (m.tenant !== want.tenant) throw ErrConflict('tenant_mismatch', `media in ${baseDir} belongs to tenant ${m.tenant}, not ${want.tenant}`);
  if (m.vm !== want.vm || m.disk !== want.disk || m.generation !== want.generation) {
    throw new LifeboatError('corrupt', `${path} names ${m.vm}/${m.disk} generation ${m.generation}, but lies in the directory of ${want.vm}/${want.disk} generation ${want.generation}`);
  }
  if (!m.complete) throw new LifeboatError('invalid_argument', `media of ${m.vm}/${m.disk} generation ${m.generation} is incomplete: the agent has not finished writing it (run lifeboat-agent run --once until it has)`);
  return m;
}

type MediaChunk = MediaManifest['chunks'][number];

/**
 * Checks that chunks 0 … chunkCount−1 are all on the media with the manifest's size and SHA-256 and
 * returns their entries in index order; nothing is written.
 */
async function verifyChunks(baseDir: string, m: MediaManifest): Promise<MediaChunk[]> {
  const byIndex = new Map(m.chunks.map((c) => [c.index, c]));
  if (byIndex.size !== m.chunks.length) throw new LifeboatError('corrupt', `${join(baseDir, 'manifest.json')} lists a chunk twice`);
  const out: MediaChunk[] = [];
  for (let i = 0; i < m.chunkCount; i++) {
    const c = byIndex.get(i);
    const name = `${hex16(i)}.chunk`;
    const path = join(baseDir, name);
    if (!c) throw new LifeboatError('corrupt', `chunk ${i} (${path}) is missing from the manifest`);
    if (c.file !== name) throw new LifeboatError('corrupt', `chunk ${i}: the manifest names file ${JSON.stringify(c.file)}, not ${name}`);
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new LifeboatError('corrupt', `chunk ${i} (${path}) is missing`);
      throw err;
    }
    if (size !== c.size) throw new LifeboatError('corrupt', `chunk ${i} (${path}) is damaged: ${size} bytes, the manifest says ${c.size}`);
    const hash = createHash('sha256');
    await pipeline(createReadStream(path), hash);
    if (hash.digest('hex') !== c.sha256) throw new LifeboatError('corrupt', `chunk ${i} (${path}) is damaged: its SHA-256 differs from the manifest`);
    out.push(c);
  }
  return out;
}

export interface ImportResult {
  tenant: string;
  vm: string;
  disk: string;
  generation: number;
  mode: 'full' | 'delta';
  status: 'accepted' | 'duplicate';
  chunks: number;
  stored: number;
  bytes: number;
}

/** Imports one disk's base from the media under dir (see the module comment). */
export async function importMedia(ctx: ServiceContext, enqueue: EnqueueMerge | undefined, tenant: string, body: ImportMediaBody): Promise<ImportResult> {
  checkTenantName(tenant);
  const { vm, disk: diskId, generation } = body;
  if (!(await getVm(ctx.db, tenant, vm))) throw new LifeboatError('not_found', `tenant ${tenant} has no VM ${vm} (the agent registers it on its first run)`);
  const disk = await getDisk(ctx.db, tenant, vm, diskId);
  if (!disk) throw new LifeboatError('not_found', `VM ${vm} of tenant ${tenant} has no disk ${diskId}`);
  const baseDir = mediaBaseDir(body.dir, tenant, vm, diskId, generation);
  const m = await readMediaManifest(baseDir, { tenant, vm, disk: diskId, generation });
  const ref = { tenant, vm, disk: diskId };
  const result: ImportResult = { ...ref, generation, mode: m.mode, status: 'duplicate', chunks: m.chunkCount, stored: 0, bytes: 0 };
  if (disk.baseComplete && generation < disk.generation) throw ErrConflict('stale_generation', `media generation ${generation} is older than generation ${disk.generation}, whose base is complete`);
  const chunks = await verifyChunks(baseDir, m);
  // Already merged: its chunk objects may have been cleaned up since, so store nothing again.
  if (disk.baseComplete && generation === disk.generation) return result;

  const committed = new Set((await ctx.db.query<{ sequence: number }>(`SELECT sequence FROM logs WHERE tenant = $1 AND vm = $2 AND disk = $3 AND kind = 'chunk' AND generation = $4`,
    [tenant, vm, diskId, generation])).map((r) => Number(r.sequence)));
  for (const c of chunks) {
    if (committed.has(c.index)) continue;
    const path = join(baseDir, c.file);
    const factory = Object.assign(() => createReadStream(path), { contentLength: c.size });
    await ctx.store.put(chunkKey(ref, generation, c.index), factory, { contentLength: c.size });
    result.stored++;
    result.bytes += c.size;
  }
  result.status = await ctx.db.transaction(async (tx) => {
    let fresh = false;
    for (const c of chunks) {
      const key = chunkKey(ref, generation, c.index);
      const { inserted, row } = await insertLog(tx, { ...ref, kind: 'chunk', generation, sequence: c.index, key, size: c.size, sha256: c.sha256, consistency: 'crash', createdAt: new Date(c.createdAt) });
      if (!inserted && (row.key !== key || Number(row.size) !== c.size || row.sha256 !== c.sha256)) {
        throw ErrConflict('commit_differs', `chunk ${c.index} of generation ${generation} was committed before with another size or digest`);
      }
      fresh ||= inserted;
    }
    const createdAt = chunks.reduce((t, c) => (c.createdAt > t ? c.createdAt : t), chunks[0]?.createdAt ?? new Date().toISOString());
    const ins = await tx.query(`INSERT INTO bases (tenant, vm, disk, generation, mode, chunk_count, consistency, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)
      ON CONFLICT DO NOTHING RETURNING generation`, [tenant, vm, diskId, generation, m.mode, m.chunkCount, 'crash', new Date(createdAt)]);
    return fresh || ins.length > 0 ? 'accepted' as const : 'duplicate' as const;
  });
  await enqueue?.(ref);
  return result;
}
