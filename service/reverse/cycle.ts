/**
 * One reverse cycle of a failed-over VM (docs/reverse.md): what the VM wrote at the hoster since the
 * last reverse cycle, closed into one sealed .hrl log per disk (the forward format), sealed to the
 * newest envelope key of the VM's server, stored under the tenant's reverse prefix and recorded.
 *
 * Input: the failover (its VM, its disks in spec order: overlay N is node `ovN`), its work directory,
 * the QMP connection to its qemu (QemuDriver.qmp), the catalog and the object store.
 * How: the qemu source of shared/qemu (the agent's, with bitmaps named `lifeboat-rv-<n>`) on every
 * overlay node: one QMP transaction freezes a point-in-time view of every disk and swaps its bitmap,
 * the views are read through qemu's NBD export of them, so each log is one moment of the running VM.
 * The first cycle of a generation starts from the driver's `lifeboat-fo` bitmap (every write since
 * the failover started), copied into `lifeboat-rv-0` in one transaction; its log is a delta.
 * Crash safety: a log's row is written only after its object is stored whole; the frozen bitmap is
 * dropped only after the row. A worker killed anywhere leaves a disabled bitmap that the next cycle
 * merges back (recover), and repeats the same sequence; changes may ship twice, never get lost.
 * A reverse bitmap lost with a killed qemu starts a new generation whose delta is every write since
 * the failover (`lifeboat-fo`), or the whole disk when that was lost too (bitmap-reset.json).
 * Failure: no envelope key of the VM's server → conflict `no_envelope_key`; QMP and store errors
 * throw (the cycle is repeated; nothing was recorded for a disk whose row was not written).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { PublicJwk } from '../../shared/crypto/keys.js';
import { checkJwk } from '../../shared/crypto/keys.js';
import { writeLogFile, type Compression } from '../../shared/log/index.js';
import type { ObjectStore } from '../../shared/objectstore/index.js';
import { reverseLogKey } from '../../shared/objectstore/keys.js';
import type { QmpClient } from '../../shared/qmp/client.js';
import { listBitmaps } from '../../shared/qemu/nodes.js';
import { QemuSource, beginCyclesAt, type QemuCycle } from '../../shared/qemu/source.js';
import type { Db, Queryable } from '../catalog/db.js';
import type { FailoverRow } from '../catalog/failovers.js';
import { getReverseDisk, insertReverseLog, listEnvelopeKeys, newReverseGeneration, startReverseDisk, type ReverseLogRow } from '../catalog/reverse.js';
import { getVm } from '../catalog/vms.js';
import { ErrConflict } from '../errors.js';
import { FailoverBitmap } from '../failover/drivers/qemu.js';

/** The reverse cycles' bitmaps on the overlay nodes. */
export const ReverseBitmapPrefix = 'lifeboat-rv-';
/** Where the driver lists disks whose `lifeboat-fo` bitmap was lost to a killed qemu. */
const BitmapResetFile = 'bitmap-reset.json';
/** The reverse cycles' own directory inside the failover's work directory (views, NBD socket, logs being written). */
export const ReverseWorkDir = 'rv';

export interface ReverseCycleDeps {
  db: Db;
  store: ObjectStore;
  log?: Logger;
}

export interface ReverseCycleInput {
  failover: Pick<FailoverRow, 'id' | 'tenant' | 'vm' | 'fork'>;
  /** The failover's work directory (the driver's: overlays, spec.json, bitmap-reset.json). */
  workDir: string;
  /** The monitor of the failover's qemu (QemuDriver.qmp(workDir)). */
  qmp: QmpClient;
  compression?: Compression;
}

/** The disk's new log as the catalog records it (size: bytes of the sealed object), and its data. */
export interface ReverseDiskResult extends Pick<ReverseLogRow, 'disk' | 'generation' | 'sequence' | 'kind' | 'key' | 'size'> {
  /** Bytes the bitmap marked changed (what the VM wrote), and data bytes in the log. */
  changedBytes: number;
  dataBytes: number;
}

export interface ReverseCycleResult {
  cycle: number;
  capturedAt: Date;
  kid: string;
  disks: ReverseDiskResult[];
}

/** The newest envelope key of the server the VM replicates from. */
async function recipientFor(db: Queryable, tenant: string, vm: string): Promise<{ kid: string; jwk: PublicJwk }> {
  const row = await getVm(db, tenant, vm);
  if (!row) throw ErrConflict('no_vm', `VM ${vm} is not registered`);
  const [newest] = await listEnvelopeKeys(db, tenant, row.serverFqdn);
  if (!newest) {
    throw ErrConflict('no_envelope_key', `VM ${vm}: its server ${row.serverFqdn} registered no envelope key (agent: lifeboat-agent envelope-key register, or renew its certificate)`);
  }
  return { kid: newest.kid, jwk: checkJwk(newest.jwk, 'public', `envelope key ${newest.kid}`) };
}

async function lostFailoverBitmaps(workDir: string): Promise<Set<string>> {
  try {
    // The driver's record: {"<disk id>": "<when>"} (docs/failover-qemu.md).
    return new Set(Object.keys(JSON.parse(await readFile(join(workDir, BitmapResetFile), 'utf8')) as Record<string, string>));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Set();
    throw err;
  }
}

/**
 * Makes sure every overlay has a recording reverse bitmap: a disk with none starts from the driver's
 * failover bitmap (all writes since the failover started) in one transaction; a disk that had shipped
 * logs and lost its bitmap starts a new generation. Without a usable failover bitmap nothing is added:
 * the next begin() reads every allocated range of the view (the whole disk as the VM sees it).
 */
async function ensureBitmaps(deps: ReverseCycleDeps, input: ReverseCycleInput, sources: QemuSource[]): Promise<void> {
  const { tenant, vm } = input.failover;
  const lost = await lostFailoverBitmaps(input.workDir);
  for (const [i, source] of sources.entries()) {
    if (await source.liveBitmap()) continue;
    const disk = input.failover.fork[i]!.disk;
    const row = (await getReverseDisk(deps.db, tenant, vm, disk))!;
    if (row.nextSequence > 1) {
      await newReverseGeneration(deps.db, tenant, vm, disk);
      deps.log?.warn({ tenant, vm, disk }, 'reverse bitmap lost (qemu restarted without it): a new reverse generation starts with a delta of every write since the failover');
    }
    const fo = (await listBitmaps(input.qmp, source.node)).find((b) => b.name === FailoverBitmap);
    if (!fo || lost.has(disk)) {
      deps.log?.warn({ tenant, vm, disk }, 'no usable failover bitmap: the reverse delta covers the whole disk');
      continue;
    }
    const name = `${ReverseBitmapPrefix}0`;
    await input.qmp.execute('transaction', { actions: [
      { type: 'block-dirty-bitmap-add', data: { node: source.node, name, persistent: true, granularity: fo.granularity } },
      { type: 'block-dirty-bitmap-merge', data: { node: source.node, target: name, bitmaps: [FailoverBitmap] } },
    ] });
  }
}

/** The cycle running now per work directory: one qemu's bitmaps see one cycle at a time. */
const inFlight = new Map<string, Promise<unknown>>();

/**
 * Runs one reverse cycle of every disk of the failover's VM. Cycles of one VM in this process (the
 * timer's and a failback's final cycle) run one after the other: the second starts after the first
 * ended. The failover host that runs the VM is the only process that runs its cycles.
 */
export async function reverseCycle(deps: ReverseCycleDeps, input: ReverseCycleInput): Promise<ReverseCycleResult> {
  const before = inFlight.get(input.workDir);
  const run = (async () => {
    if (before) await before.catch(() => undefined);
    return runCycle(deps, input);
  })();
  inFlight.set(input.workDir, run);
  try {
    return await run;
  } finally {
    if (inFlight.get(input.workDir) === run) inFlight.delete(input.workDir);
  }
}

async function runCycle(deps: ReverseCycleDeps, input: ReverseCycleInput): Promise<ReverseCycleResult> {
  const { tenant, vm, id } = input.failover;
  const recipient = await recipientFor(deps.db, tenant, vm);
  const fork = input.failover.fork;
  for (const [position, d] of fork.entries()) await startReverseDisk(deps.db, { tenant, vm, disk: d.disk, failoverId: id, position });
  const work = join(input.workDir, ReverseWorkDir);
  await mkdir(work, { recursive: true, mode: 0o700 });
  const sources = fork.map((_, i) => new QemuSource({ qmp: input.qmp, node: `ov${i}`, workDir: work, prefix: ReverseBitmapPrefix }));
  for (const s of sources) await s.recover();
  await ensureBitmaps(deps, input, sources);
  const begun = await beginCyclesAt(sources);
  const cycles = begun.cycles;
  const settled = new Set<QemuCycle>();
  try {
    const cycle = await nextCycleId(deps.db, tenant, vm, begun.capturedMs);
    const results: ReverseDiskResult[] = [];
    for (const [i, d] of fork.entries()) {
      const c = cycles[i]!;
      const r = await closeDisk(deps, input, recipient, d.disk, c, { cycle, capturedMs: begun.capturedMs }, work);
      results.push(r);
      await c.commit();
      settled.add(c);
    }
    return { cycle, capturedAt: new Date(begun.capturedMs), kid: recipient.kid, disks: results };
  } finally {
    for (const c of cycles) if (!settled.has(c)) await c.abandon().catch((err: unknown) => deps.log?.warn({ err }, 'reverse cycle: bitmap not merged back; the next cycle recovers it'));
  }
}

/** Cycle ids grow per VM: the capture time, or one past the last reverse log's when the clock went back. */
async function nextCycleId(db: Queryable, tenant: string, vm: string, capturedMs: number): Promise<number> {
  const [row] = await db.query<{ last: number | null }>('SELECT max(cycle)::float8 AS last FROM reverse_logs WHERE tenant = $1 AND vm = $2', [tenant, vm]);
  return Math.max(capturedMs, (row?.last ?? 0) + 1);
}

async function closeDisk(deps: ReverseCycleDeps, input: ReverseCycleInput, recipient: { kid: string; jwk: PublicJwk }, disk: string, c: QemuCycle,
  at: { cycle: number; capturedMs: number }, work: string): Promise<ReverseDiskResult> {
  const { tenant, vm } = input.failover;
  const row = (await getReverseDisk(deps.db, tenant, vm, disk))!;
  const { generation, nextSequence: sequence } = row;
  const kind = sequence === 1 ? 'delta' : 'incremental';
  const file = join(work, `${disk}-${generation}-${sequence}.hrl`);
  await rm(file, { force: true }); // left by a killed cycle: this one writes it again
  let dataBytes = 0;
  const extents = (async function* () {
    for await (const e of c.extents()) {
      if (e.kind === 'data') dataBytes += e.length;
      yield e;
    }
  })();
  try {
    await writeLogFile(file, {
      tenant, vm, disk, generation, sequence, kind, virtualSize: c.size, consistency: 'crash', cycle: at.cycle, capturedMs: at.capturedMs,
      ...(input.compression ? { compression: input.compression } : {}),
    }, { extents, read: (offset, buf) => c.readInto(offset, buf) }, { recipient: recipient.jwk });
    const size = (await stat(file)).size;
    const sha256 = await fileSha256(file);
    const key = reverseLogKey({ tenant, vm, disk }, generation, sequence);
    await deps.store.put(key, () => createReadStream(file), { contentLength: size });
    await deps.db.transaction(async (tx) => {
      await insertReverseLog(tx, {
        tenant, vm, disk, generation, sequence, kind, key, size, sha256, kid: recipient.kid, cycle: at.cycle,
        capturedAt: new Date(at.capturedMs), dataBytes, changedBytes: c.changedBytes,
      });
    });
    deps.log?.info({ tenant, vm, disk, generation, sequence, kind, size, dataBytes }, 'reverse log stored');
    return { disk, generation, sequence, kind, key, size, changedBytes: c.changedBytes, dataBytes };
  } finally {
    await rm(file, { force: true });
  }
}

async function fileSha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}
