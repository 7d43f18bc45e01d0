/**
 * `catalog rebuild`: the VMs, disks, applied sequences, committed logs and recovery points of a
 * catalog that lost them, made again from what outlives the catalog: the state file beside each
 * replica (the authority on what was applied, service/replication/replica.ts) and the object store's
 * listing of the logs and chunks agents uploaded. Tenants, their authorization entries, servers,
 * users and keys are not on replica storage: they come from a backup (backup.ts) restored first.
 *
 * Each VM is rebuilt in one transaction and a VM already in the catalog is left as it is, so a rebuild
 * that stopped half-way is finished by running it again. Docs: docs/operations.md, "Catalog rebuild".
 */
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseFixedHeader, FixedHeaderBytes } from '../../shared/crypto/format.js';
import { openDisk } from '../../shared/disk/index.js';
import { LifeboatError, isLifeboatError } from '../../shared/errors.js';
import { decodeLogHeader } from '../../shared/log/header.js';
import type { LogHeader } from '../../shared/log/header.js';
import { diskPrefix, parseKey } from '../../shared/objectstore/keys.js';
import type { ObjectStore } from '../../shared/objectstore/index.js';
import type { Db, Queryable } from '../catalog/db.js';
import { listServers } from '../catalog/servers.js';
import type { AuthorizationRow } from '../catalog/tenants.js';
import { listAuthorizations, listTenants } from '../catalog/tenants.js';
import type { Config } from '../config/config.js';
import { idPattern } from '../http/json.js';
import { readState, replicaDir } from '../replication/replica.js';
import type { AppliedState } from '../replication/replica.js';
import { bestMatch } from '../trust/patterns.js';

/** Settings a VM gets until its agent registers it again (each cycle's registration sets its own). */
export const RebuiltVmDefaults = { frequencySeconds: 300, appConsistentEvery: 0, compression: 'zstd', historyWithPoints: 24 } as const;

/** VMs rebuilt at once. */
const Concurrency = 8;

/** Bytes read from the front of an object for its envelope context (the .hrl header). */
const HeadBytes = FixedHeaderBytes + 1024;

export interface RebuildProgress {
  vmsDone: number;
  vmsTotal: number;
}

export interface RebuildReport {
  storageRoots: string[];
  vms: number;
  disks: number;
  points: number;
  /** Committed logs and chunks not yet applied, recorded again as pending. */
  pending: number;
  /** VMs already in the catalog, left as they were. */
  kept: number;
  /** Directories that could not be rebuilt, each with why. */
  skipped: { path: string; reason: string }[];
  seconds: number;
}

interface FoundDisk {
  id: string;
  dir: string;
  state: AppliedState;
}

interface FoundVm {
  tenant: string;
  name: string;
  root: string;
  disks: FoundDisk[];
}

export interface RebuildDeps {
  config: Pick<Config, 'replicaRoot'>;
  db: Db;
  store: ObjectStore;
}

/** Rebuilds every VM found on replica storage whose tenant is in the catalog. */
export async function rebuildCatalog(deps: RebuildDeps, options: { onProgress?: (p: RebuildProgress) => void } = {}): Promise<RebuildReport> {
  const started = process.hrtime.bigint();
  const tenants = await listTenants(deps.db);
  if (tenants.length === 0) {
    throw new LifeboatError('conflict', 'the catalog has no tenants: restore a backup first (lifeboat-service restore), then rebuild');
  }
  const entries = new Map<string, AuthorizationRow[]>();
  for (const t of tenants) entries.set(t.name, await listAuthorizations(deps.db, t.name));
  const roots = [...new Set([deps.config.replicaRoot, ...[...entries.values()].flat().map((e) => e.storage).filter((s) => s !== '')].map((r) => resolve(r)))];
  const skipped: RebuildReport['skipped'] = [];
  const found: FoundVm[] = [];
  for (const root of roots) found.push(...await scanRoot(root, new Set(entries.keys()), skipped));

  const report: RebuildReport = { storageRoots: roots, vms: 0, disks: 0, points: 0, pending: 0, kept: 0, skipped, seconds: 0 };
  let done = 0;
  const one = async (vm: FoundVm) => {
    const exists = await deps.db.query('SELECT 1 FROM vms WHERE tenant = $1 AND name = $2', [vm.tenant, vm.name]);
    if (exists.length > 0) {
      report.kept++;
    } else {
      const entry = await entryFor(deps, vm, entries.get(vm.tenant)!);
      if (!entry) {
        skipped.push({ path: join(vm.root, vm.tenant, vm.name), reason: `tenant ${vm.tenant} has no authorization entry for storage ${vm.root}` });
      } else {
        const prepared = await prepareVm(deps.store, vm);
        await deps.db.transaction((tx) => insertVm(tx, vm, entry, prepared));
        report.vms++;
        report.disks += vm.disks.length;
        report.points += prepared.points.length;
        report.pending += prepared.disks.reduce((n, d) => n + d.rows.filter((r) => r.status === 'pending').length, 0);
      }
    }
    options.onProgress?.({ vmsDone: ++done, vmsTotal: found.length });
  };
  // A few VMs at once: most of a VM's time is waiting on the object store and the catalog.
  const queue = [...found];
  await Promise.all(Array.from({ length: Concurrency }, async () => {
    for (let vm = queue.shift(); vm; vm = queue.shift()) await one(vm);
  }));
  report.seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return report;
}

/** `<root>/<tenant>/<vm>/<disk>/state.json` for the catalog's tenants; the rest is reported. */
async function scanRoot(root: string, tenants: Set<string>, skipped: RebuildReport['skipped']): Promise<FoundVm[]> {
  const out: FoundVm[] = [];
  for (const tenant of await dirs(root)) {
    if (!tenants.has(tenant)) {
      skipped.push({ path: join(root, tenant), reason: `no tenant ${tenant} in the catalog` });
      continue;
    }
    for (const vm of await dirs(join(root, tenant))) {
      const disks: FoundDisk[] = [];
      for (const id of await dirs(join(root, tenant, vm))) {
        const dir = replicaDir(root, tenant, vm, id);
        try {
          disks.push({ id, dir, state: await readState(dir) });
        } catch (err) {
          skipped.push({ path: dir, reason: isLifeboatError(err) ? err.message : `no readable state.json (${(err as NodeJS.ErrnoException).code ?? String(err)})` });
        }
      }
      if (disks.length > 0) out.push({ tenant, name: vm, root, disks });
    }
  }
  return out;
}

/** Sub-directories whose names are ids (anything else was not made by the service). */
async function dirs(path: string): Promise<string[]> {
  const list = await readdir(path, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  return list.filter((d) => d.isDirectory() && idPattern.test(d.name)).map((d) => d.name).sort();
}

/**
 * The authorization entry the VM was registered under: the one governing the newest of the tenant's
 * servers among those placing replicas on this storage; else the oldest entry placing them there.
 * The server name is a guess until the agent registers again, which records the one it presents;
 * the trust group, which decides which servers may speak for the VM, is the entry's.
 */
async function entryFor(deps: RebuildDeps, vm: FoundVm, entries: AuthorizationRow[]): Promise<(AuthorizationRow & { fqdn: string }) | undefined> {
  const onRoot = entries.filter((e) => resolve(e.storage === '' ? deps.config.replicaRoot : e.storage) === vm.root);
  if (onRoot.length === 0) return undefined;
  const servers = (await listServers(deps.db, vm.tenant)).filter((s) => s.revokedAt === null).reverse();
  for (const s of servers) {
    const e = bestMatch(entries, s.fqdn);
    if (e && onRoot.includes(e)) return { ...e, fqdn: s.fqdn };
  }
  return { ...onRoot[0]!, fqdn: onRoot[0]!.pattern.replace('*', 'unknown') };
}

interface StoredObject {
  key: string;
  kind: 'log' | 'chunk';
  disk: string;
  generation: number;
  sequence: number;
  size: number;
}

/** The VM's logs and chunks in the object store, by disk. */
async function objectsOf(store: ObjectStore, vm: FoundVm): Promise<Map<string, StoredObject[]>> {
  const out = new Map<string, StoredObject[]>();
  for (const d of vm.disks) {
    const list: StoredObject[] = [];
    for await (const o of store.list(diskPrefix({ tenant: vm.tenant, vm: vm.name, disk: d.id }))) {
      let k;
      try {
        k = parseKey(o.key);
      } catch {
        continue;
      }
      if (k.kind === 'manifest' || k.kind === 'reverse-log') continue; // reverse logs are never under a disk's prefix
      list.push({ key: o.key, kind: k.kind, disk: d.id, generation: k.generation, sequence: k.kind === 'log' ? k.sequence : k.index, size: o.size });
    }
    out.set(d.id, list);
  }
  return out;
}

/**
 * The log and chunk rows a disk needs: the last log applied (a point's consistency is read from it,
 * and an agent repeating its commit must find it), and every log or chunk past the applied state,
 * pending, so the merge goes on from there. Older objects stay in the store without rows.
 */
function wanted(state: AppliedState, objects: StoredObject[]): { object: StoredObject; status: 'applied' | 'pending' }[] {
  const out: { object: StoredObject; status: 'applied' | 'pending' }[] = [];
  for (const o of objects) {
    if (o.kind === 'log' && o.generation === state.generation && state.baseComplete) {
      if (o.sequence === state.appliedSequence) out.push({ object: o, status: 'applied' });
      else if (o.sequence > state.appliedSequence) out.push({ object: o, status: 'pending' });
    } else if (o.generation > state.generation || (o.generation === state.generation && !state.baseComplete)) {
      out.push({ object: o, status: 'pending' });
    }
  }
  return out;
}

/** SHA-256 of the whole object and its .hrl header (the envelope's context, in the clear). */
async function readObject(store: ObjectStore, key: string): Promise<{ sha256: string; header: LogHeader }> {
  const hash = createHash('sha256');
  const head: Buffer[] = [];
  let headLength = 0;
  for await (const chunk of await store.get(key)) {
    const b = chunk as Buffer;
    hash.update(b);
    if (headLength < HeadBytes) {
      head.push(b.subarray(0, HeadBytes - headLength));
      headLength += Math.min(b.length, HeadBytes - headLength);
    }
  }
  const bytes = Buffer.concat(head);
  const { contextLength } = parseFixedHeader(bytes);
  if (FixedHeaderBytes + contextLength > bytes.length) throw new LifeboatError('corrupt', `${key}: header longer than ${HeadBytes} bytes`);
  return { sha256: hash.digest('hex'), header: decodeLogHeader(bytes.subarray(FixedHeaderBytes, FixedHeaderBytes + contextLength)) };
}

interface LogRowIn {
  object: StoredObject;
  status: 'applied' | 'pending';
  sha256: string;
  header: LogHeader;
}

interface PreparedVm {
  disks: { disk: FoundDisk; virtualSize: number; sourceFormat: string; rows: LogRowIn[] }[];
  points: AppliedState['points'];
  capturedByCycle: Map<number, Date>;
}

/** What a VM's rows need from its replicas and its objects, read before its transaction. */
async function prepareVm(store: ObjectStore, vm: FoundVm): Promise<PreparedVm> {
  // Points every disk names; a point only some disks have was interrupted, and the points job undoes
  // it as it would have.
  const named = vm.disks.map((d) => new Map(d.state.points.map((p) => [p.name, p])));
  const points = [...named[0]!.values()].filter((p) => named.every((m) => m.has(p.name))).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  const objects = await objectsOf(store, vm);
  const capturedByCycle = new Map<number, Date>();
  const disks: PreparedVm['disks'] = [];
  for (const d of vm.disks) {
    const top = await openDisk(join(d.dir, d.state.layers.at(-1)!));
    const virtualSize = top.virtualSize;
    await top.close();
    const rows: LogRowIn[] = [];
    for (const { object, status } of wanted(d.state, objects.get(d.id) ?? [])) {
      const { sha256, header } = await readObject(store, object.key);
      if (header.cycle !== undefined && header.capturedMs !== undefined) capturedByCycle.set(header.cycle, new Date(header.capturedMs));
      rows.push({ object, status, sha256, header });
    }
    disks.push({ disk: d, virtualSize, sourceFormat: d.state.layers[0]!.endsWith('.raw') ? 'raw' : 'vhdx', rows });
  }
  return { disks, points, capturedByCycle };
}

async function insertVm(tx: Queryable, vm: FoundVm, entry: AuthorizationRow & { fqdn: string }, p: PreparedVm): Promise<void> {
  await tx.query(`INSERT INTO vms (tenant, name, display_name, server_fqdn, authorization_id, trust_group, storage_dir, frequency_seconds, history, app_consistent_every, compression)
    VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $8, $9, $10)`,
  [vm.tenant, vm.name, entry.fqdn, entry.id, entry.trustGroup, vm.root, RebuiltVmDefaults.frequencySeconds,
    p.points.length > 0 ? RebuiltVmDefaults.historyWithPoints : 0, RebuiltVmDefaults.appConsistentEvery, RebuiltVmDefaults.compression]);
  for (const { disk: d, virtualSize, sourceFormat, rows } of p.disks) {
    const s = d.state;
    const at = new Date(s.updatedAt);
    await tx.query(`INSERT INTO disks (tenant, vm, id, virtual_size, source_format, replica_dir, generation, base_complete, applied_sequence, applied_cycle, state, resync_reason, last_applied_at)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
    [vm.tenant, vm.name, d.id, virtualSize, sourceFormat, d.dir, s.generation, s.baseComplete, s.appliedSequence, s.appliedCycle,
      s.state, s.resyncReason, s.appliedSequence > 0 || s.baseComplete ? at : null]);
    for (const { object: o, status, sha256, header: h } of rows) {
      const log = o.kind === 'log';
      await tx.query(`INSERT INTO logs (tenant, vm, disk, kind, generation, sequence, key, size, sha256, consistency, created_at, status, cycle, captured_at, applied_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
      [vm.tenant, vm.name, d.id, o.kind, o.generation, o.sequence, o.key, o.size, sha256, log ? h.consistency : 'crash', new Date(h.createdMs), status,
        log ? h.cycle ?? null : null, log && h.capturedMs !== undefined ? new Date(h.capturedMs) : null, status === 'applied' ? at : null]);
    }
  }
  for (const pt of p.points) {
    await tx.query('INSERT INTO recovery_points (tenant, vm, created_at, consistency, layer, cycle, captured_at) VALUES ($1, $2, $3, $4, $5, $6, $7)',
      [vm.tenant, vm.name, new Date(pt.createdAt), pt.consistency, pt.name, pt.cycle, pt.cycle === null ? null : p.capturedByCycle.get(pt.cycle) ?? null]);
  }
}
