/**
 * Public addresses on the failover host (docs/failover-public-ips.md): the failover job applies a
 * failover's table when its VM starts and removes it at teardown; the host's tick reconciles (a
 * mapping added or removed while the VM runs, a table lost, a teardown cut short).
 *
 * Input: the failover, the tenant's mappings of its VM (a test failover takes only those marked test),
 * the IP plan of its work directory (the DR address of a mapped NIC).
 * Output: one nftables table per failover (network/nat.ts) and its rows in failover_public_ips,
 * written before the table changes, so the catalog names every rule a host may hold; a `public-ips`
 * step in the failover's record and its drill report.
 * Failure: a mapping that cannot be resolved (NIC gone, DHCP without a DR address, the address held
 * by another failover) is skipped with a warning; nft failing is a failed step and a warning, never
 * a failed failover (the VM is up; the tick tries again). Removal that fails throws: the teardown is
 * retried. Idempotent: the table is replaced in one nft transaction, so a job run again or a tick
 * never duplicates a rule.
 * Where the rules go: a qemu host applies them itself with nftables (its VMs' NICs are on this
 * machine's bridges); a hyperv or webhook host hands them to its driver (driver.publicIps: the Hyper-V
 * host's NAT, the orchestrator), the same set at the same moments.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { userMessage } from '../../shared/errors.js';
import type { Queryable } from '../catalog/db.js';
import type { FailoverRow } from '../catalog/failovers.js';
import { getFailover, listFailovers } from '../catalog/failovers.js';
import { addStep } from './steps.js';
import type { AppliedPublicIpRow } from '../catalog/public-ips.js';
import { endedWithPublicIps, heldByOthers, listAppliedPublicIps, listPublicMappings, markRemoved, recordApplied } from '../catalog/public-ips.js';
import type { HostRuntime } from './job.js';
import { familyOf, parseInterfaceCidr, parseIp } from './network/address.js';
import type { NicPlan } from './network/mappings.js';
import type { PublicIpRule } from './network/nat.js';
import { natTableName, renderNatDelete, renderNatTable } from './network/nat.js';
import { Nft } from './nft.js';
import { NetworkPlanFile } from './seed.js';

type Host = Pick<HostRuntime, 'ctx' | 'hostName' | 'dir' | 'log'> & Partial<Pick<HostRuntime, 'driver'>>;
type Applied = PublicIpRule & { mac: string | null };

/** States in which a failover's VM has been started and its rules belong on the host. */
const StartedStates = new Set(['booting', 'ready', 'running', 'committing', 'committed']);

/** Where a failover's rules are put in force. */
interface Applier {
  /** How the step names the place, e.g. `nftables table lifeboat_…`. */
  where(id: string): string;
  /** Puts exactly these rules in force; notes on what could not be carried. */
  apply(id: string, rules: readonly Applied[]): Promise<string[]>;
  remove(id: string): Promise<void>;
  /** Which failovers' rules are there now, when the place can be listed (nftables); else undefined. */
  present(): Promise<((id: string) => boolean) | undefined>;
  /** A test failover's NICs are on an isolated network this place does not route to. */
  isolatesTests: boolean;
}

function applierOf(rt: Host): Applier | undefined {
  if (rt.ctx.config.failover.host.driver === 'qemu') {
    const p = rt.ctx.config.failover.publicIps;
    const nft = new Nft({ binary: p.nft, netns: p.netns });
    return {
      where: (id) => `nftables table ${natTableName(id)}`,
      apply: async (id, rules) => { await nft.apply(renderNatTable(natTableName(id), rules, { uplink: p.uplink })); return []; },
      remove: (id) => nft.apply(renderNatDelete(natTableName(id))),
      present: async () => {
        const tables = new Set((await nft.tables()).filter((t) => t.family === 'inet').map((t) => t.name));
        return (id) => tables.has(natTableName(id));
      },
      isolatesTests: true,
    };
  }
  const { driver } = rt;
  if (!driver?.publicIps) return undefined;
  const publicIps = driver.publicIps.bind(driver);
  return {
    where: () => `${driver.kind} driver`,
    apply: (id, rules) => publicIps(join(rt.dir, 'vms', id), rules),
    remove: async (id) => { await publicIps(join(rt.dir, 'vms', id), []); },
    present: async () => undefined,
    isolatesTests: driver.kind === 'hyperv',
  };
}

/** What the failover's table should hold now, and why a mapping of its VM is left out. */
export async function desiredPublicIps(db: Queryable, f: Pick<FailoverRow, 'id' | 'tenant' | 'vm' | 'kind'>, plan: readonly NicPlan[], isolatesTests = true): Promise<{ rules: Applied[]; notes: string[] }> {
  const all = await listPublicMappings(db, f.tenant, f.vm);
  const mappings = f.kind === 'test' ? all.filter((m) => m.test) : all;
  const notes: string[] = [];
  if (mappings.length < all.length) notes.push(`${all.length - mappings.length} mapping(s) of ${f.vm} are for real failovers only (test: false)`);
  const held = await heldByOthers(db, f.id, mappings.map((m) => m.address));
  const rules: Applied[] = [];
  for (const m of mappings) {
    const skip = (why: string) => notes.push(`public address ${m.address}: ${why}; not applied`);
    const other = held.get(m.address);
    if (other) { skip(`failover ${other} holds it`); continue; }
    const pub = parseIp(m.address);
    if (!pub.ok) { skip(pub.reason); continue; }
    const family = familyOf(pub.value);
    let dr = m.drAddress;
    let mac = m.mac;
    if (m.mac !== null) {
      const nic = plan.find((n) => n.mac === m.mac);
      if (!nic) { skip(`${f.vm} has no NIC ${m.mac} in this failover`); continue; }
      const own = nic.config.mode === 'static'
        ? nic.config.addresses.flatMap((a) => { const c = parseInterfaceCidr(a); return c.ok && c.value.family === family ? [c.value.address] : []; })
        : [];
      if (dr === null) {
        if (own.length === 0) { skip(`NIC ${m.mac} has no static IPv${family} address in the ${f.kind === 'test' ? 'test' : 'production'} plan (give the mapping its DR address)`); continue; }
        dr = own[0]!;
      } else if (nic.config.mode === 'static' && !own.includes(dr)) {
        skip(`NIC ${m.mac} does not hold ${dr} in the plan (it has ${own.join(', ') || 'no IPv' + family + ' address'})`); continue;
      }
    } else {
      mac = plan.find((n) => n.config.mode === 'static' && n.config.addresses.some((a) => a.split('/')[0] === dr))?.mac ?? null;
    }
    const drIp = parseIp(dr!);
    if (!drIp.ok || familyOf(drIp.value) !== family) { skip(`${dr} is not an IPv${family} address`); continue; }
    if (rules.some((r) => r.drAddress === drIp.value.toString())) { skip(`${dr} already has public address ${rules.find((r) => r.drAddress === drIp.value.toString())!.address}`); continue; }
    rules.push({ address: m.address, drAddress: drIp.value.toString(), allow: m.allow, mac });
  }
  if (f.kind === 'test' && rules.length > 0 && isolatesTests) notes.push('a test failover\'s NICs are on its run\'s isolated network, which this host does not route: the rules are in place, but reach the VM only where its NIC is on a bridge of this host');
  return { rules, notes };
}

async function readPlan(rt: Host, id: string): Promise<NicPlan[]> {
  try {
    return (JSON.parse(await readFile(join(rt.dir, 'vms', id, NetworkPlanFile), 'utf8')) as { plan: NicPlan[] }).plan;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

const describe = (rules: readonly Applied[]) => rules.map((r) => `${r.address} → ${r.drAddress} (${r.allow.join(', ') || 'outbound only'})`).join('; ');

function same(rules: readonly Applied[], applied: readonly AppliedPublicIpRow[]): boolean {
  const key = (x: { address: string; drAddress: string; mac: string | null; allow: string[] }) => `${x.address} ${x.drAddress} ${x.mac ?? ''} ${x.allow.join(',')}`;
  const a = rules.map(key).sort();
  const b = applied.map(key).sort();
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Failovers whose table this host process has written since it started (a restart checks each once). */
const written = new WeakMap<object, Set<string>>();

/**
 * Brings one failover's table to what its mappings say. `announce` (the job's start step) always
 * applies and records a step; the tick applies when something changed, the table is missing or
 * stray, or this process has not written it yet (a crash between the record and nft), and records a
 * step only then. `present` is whether the table is there (the tick lists them; the job does not look).
 */
async function sync(rt: Host, f: FailoverRow, applier: Applier, announce: boolean, present?: boolean): Promise<void> {
  await serialised(f.id, () => syncNow(rt, f, applier, announce, present));
}

/** One change at a time per failover in this process (the job's start and the tick may meet). */
const queues = new Map<string, Promise<void>>();
async function serialised(id: string, fn: () => Promise<void>): Promise<void> {
  const before = queues.get(id) ?? Promise.resolve();
  const mine = before.then(fn, fn);
  const tail = mine.catch(() => undefined);
  queues.set(id, tail);
  try {
    await mine;
  } finally {
    if (queues.get(id) === tail) queues.delete(id);
  }
}

async function syncNow(rt: Host, listed: FailoverRow, applier: Applier, announce: boolean, present?: boolean): Promise<void> {
  const { db } = rt.ctx;
  // Read again now that it is this failover's turn: a teardown may have begun since the tick listed it.
  const f = await getFailover(db, listed.id);
  if (!f || f.endedAt || !StartedStates.has(f.state) || f.goal === 'stopped' || f.goal === 'reverted') return;
  const { rules, notes } = await desiredPublicIps(db, f, await readPlan(rt, f.id), applier.isolatesTests);
  const applied = await listAppliedPublicIps(db, f.id, true);
  // A booting VM gets its rules from the job's start step, once qemu runs; the tick only keeps them.
  if (!announce && f.state === 'booting' && applied.length === 0) return;
  const mine = written.get(rt.ctx) ?? new Set<string>();
  written.set(rt.ctx, mine);
  const unchanged = same(rules, applied) && (mine.has(f.id) || applied.length === 0);
  const stale = (rules.length > 0 && present === false) || (rules.length === 0 && present === true);
  if (!announce && unchanged && !stale) return;
  if (rules.length === 0 && applied.length === 0 && present !== true) {
    if (announce) await addStep(db, f.id, 'public-ips', 'skipped', notes.length ? notes.join('; ') : `no public address is mapped to ${f.vm}`);
    return;
  }
  const where = applier.where(f.id);
  await db.transaction((tx) => recordApplied(tx, f.id, rules));
  try {
    notes.push(...await applier.apply(f.id, rules));
  } catch (err) {
    // nft changed nothing (one transaction), nor did a driver that refused: the record goes back to what the host still holds.
    await db.transaction((tx) => recordApplied(tx, f.id, applied));
    const reason = userMessage(err) ?? (err as Error).message;
    rt.log.error({ failover: f.id, err }, 'public addresses not applied');
    if (announce) {
      await appendWarnings(db, f.id, [`public addresses not applied: ${reason}`]);
      await addStep(db, f.id, 'public-ips', 'failed', `${describe(rules)}: ${reason}`);
    }
    return;
  }
  mine.add(f.id);
  const detail = rules.length > 0 ? `${where}: ${describe(rules)}` : `${where} removed: no mapping applies now`;
  // Warnings first: the step is what a caller waiting for this one watches.
  if (announce && notes.length > 0) await appendWarnings(db, f.id, notes);
  await addStep(db, f.id, 'public-ips', 'done', notes.length ? `${detail}; ${notes.join('; ')}` : detail);
}

/** The failover job's hook when the VM has started. Never throws for nft: the VM is up either way. */
export async function applyPublicIps(rt: Host, f: FailoverRow): Promise<void> {
  const applier = applierOf(rt);
  if (!applier) return;
  await sync(rt, f, applier, true);
}

/** The failover job's hook at teardown: the table goes before the VM stops. Throws when nft fails. */
export async function removePublicIps(rt: Host, f: Pick<FailoverRow, 'id'>): Promise<void> {
  await serialised(f.id, () => removeNow(rt, f.id));
}

async function removeNow(rt: Host, id: string): Promise<void> {
  const applied = await listAppliedPublicIps(rt.ctx.db, id, true);
  const applier = applierOf(rt);
  if (applied.length === 0 || !applier) return;
  await applier.remove(id);
  await markRemoved(rt.ctx.db, id);
  await addStep(rt.ctx.db, id, 'public-ips', 'done', `${applier.where(id)} removed: ${applied.map((a) => a.address).join(', ')} released`);
}

/** The host's tick: every started failover's table as its mappings say; ended failovers' tables gone. */
export async function reconcilePublicIps(rt: Host): Promise<void> {
  const applier = applierOf(rt);
  if (!applier) return;
  const { db } = rt.ctx;
  const active = (await listFailovers(db, { host: rt.hostName, active: true })).filter((f) => StartedStates.has(f.state));
  const ended = await endedWithPublicIps(db, rt.hostName);
  let anything = ended.length > 0;
  for (const f of active) {
    if (anything) break;
    anything = (await listPublicMappings(db, f.tenant, f.vm)).length > 0 || (await listAppliedPublicIps(db, f.id, true)).length > 0;
  }
  if (!anything) return;
  const present = await applier.present();
  for (const f of active) {
    try {
      await sync(rt, f, applier, false, present?.(f.id));
    } catch (err) {
      rt.log.error({ failover: f.id, err }, 'public addresses: reconcile');
    }
  }
  for (const id of ended) await removePublicIps(rt, { id });
}

async function appendWarnings(db: Queryable, id: string, warnings: string[]): Promise<void> {
  await db.query('UPDATE failovers SET warnings = warnings || $2::jsonb, updated_at = now() WHERE id = $1', [id, JSON.stringify(warnings)]);
}
