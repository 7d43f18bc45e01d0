/**
 * A VM's NICs and their failover settings (docs/failover-network.md), for the hoster's operators
 * (write), the tenant's admins (write, own tenant) and viewers (read, own tenant). Another tenant's
 * VM or NIC answers 404, exactly as one that does not exist.
 *
 *   GET    /v1/tenants/{t}/vms/{vm}/nics                   {nics: [{mac, position, model, production?, test?, home?, reportedAddresses}]}
 *   PUT    /v1/tenants/{t}/vms/{vm}/nics                   {nics: [{mac, model?, production?, test?, home?, reportedAddresses?}]}: the whole set
 *   GET    /v1/tenants/{t}/vms/{vm}/nics/{mac}
 *   PUT    /v1/tenants/{t}/vms/{vm}/nics/{mac}             {model?, production?, test?, home?, reportedAddresses?}: one NIC, whole
 *   DELETE /v1/tenants/{t}/vms/{vm}/nics/{mac}
 *   GET    /v1/tenants/{t}/vms/{vm}/ip-plan?kind=production|test|home   the dry run: each NIC's settings and their origins
 *
 * `home` is the NIC's normal configuration on the tenant's own site, which failback reinstates
 * (service/failback/home.ts); it is validated as the other kinds are and names no DR network.
 *
 * Input is validated whole before anything is stored (the library's validateVmNics with the tenant's
 * other VMs' addresses in the same DR network; a network must be granted to the tenant and of the
 * settings' kind); a refusal is one 4xx line naming the NIC and field, and stores nothing.
 */
import type { Context } from 'hono';
import { Hono } from 'hono';
import { z } from 'zod';
import { ErrInvalidArgument, LifeboatError } from '../../shared/errors.js';
import type { NicModelName } from '../../shared/protocol/vm-config.js';
import { NicModels } from '../../shared/protocol/vm-config.js';
import type { Queryable } from '../catalog/db.js';
import type { VmNicRow } from '../catalog/failovers.js';
import { listVmNics, putVmNic } from '../catalog/failovers.js';
import type { TenantNicRow } from '../catalog/networks.js';
import { addressesInNetworks, deleteVmNic, grantedKinds, listTenantNics, lockTenantNetworking } from '../catalog/networks.js';
import { getVm } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import { ErrNotFoundHere } from '../errors.js';
import type { FailoverKind, NicSettings, SettingsKind } from '../failover/network/settings.js';
import { MaxAddressesPerNic, SettingsKinds, normaliseMac, validateVmNics } from '../failover/network/settings.js';
import { canonicalSourceAddress, nicChanged } from '../failover/recorded-config.js';
import { homePlanFromCatalog } from '../failback/home.js';
import { planVmIp } from '../failover/seed.js';
import { check, pathId, readJson } from '../http/json.js';
import { ifMatch, lockObject, single, withEtag } from './etag.js';
import { listQuery, pageOf } from './lists.js';
import { mayAdminister, mayRead } from '../trust/roles.js';
import type { ApiClaims } from '../trust/tokens.js';

export { NicModels };
export type { NicModelName };

export const nicBodySchema = z.strictObject({
  model: z.enum(NicModels).optional(),
  production: z.unknown().optional(),
  test: z.unknown().optional(),
  home: z.unknown().optional(),
  /** The addresses the NIC has on the tenant's site (an operator's record; the agent reports them too). */
  reportedAddresses: z.array(z.string().max(64)).max(MaxAddressesPerNic).optional(),
});
export const nicsPutSchema = z.strictObject({ nics: z.array(nicBodySchema.extend({ mac: z.string().max(64) })).max(64) });
export const nicListQuery = listQuery({});
export const planQuery = z.strictObject({ kind: z.enum(SettingsKinds).default('production') });

/** A NIC as a caller gives it: settings not yet checked. */
export interface NicInput {
  mac: string;
  model?: NicModelName | undefined;
  production?: unknown;
  test?: unknown;
  home?: unknown;
  reportedAddresses?: string[] | undefined;
}

/** A NIC as stored: settings validated and normalised. */
export interface StoredNic {
  mac: string;
  model: NicModelName;
  settings: Omit<NicSettings, 'mac'>;
  reportedAddresses: string[];
}

/** One refusal, attributed to a VM and, when known, a NIC and a kind. */
export interface NicRefusal {
  vm: string;
  mac?: string | undefined;
  kind?: SettingsKind | undefined;
  /** The field inside the NIC's kind (`addresses[1]`, `gateway4`, `network`), or the whole path. */
  field: string;
  reason: string;
}

type Env = { Variables: { operator: ApiClaims } };

/** A refusal as one line: `vm web1 nic 52:54:00:00:00:01 test.addresses[1]: …`. */
export function refusalLine(r: NicRefusal): string {
  const field = r.kind ? `${r.kind}${r.field ? `.${r.field}` : ''}` : r.field;
  return `vm ${r.vm}${r.mac ? ` nic ${r.mac}` : ''}${field ? ` ${field}` : ''}: ${r.reason}`;
}

/**
 * Checks the wanted NIC lists of some of a tenant's VMs (each list the VM's whole set, in order)
 * against each other, the tenant's other VMs and its grants. The caller holds the tenant's lock
 * (lockTenantNetworking) in the transaction it stores in. VMs are checked in the map's order, each
 * against the stored NICs of VMs not in the map and the checked NICs of those before it.
 */
export async function checkTenantNics(tx: Queryable, tenant: string, wanted: ReadonlyMap<string, readonly NicInput[]>): Promise<{ valid: Map<string, StoredNic[]>; refusals: NicRefusal[] }> {
  const granted = await grantedKinds(tx, tenant);
  const held = (await listTenantNics(tx, tenant)).filter((n) => !wanted.has(n.vm));
  const valid = new Map<string, StoredNic[]>();
  const refusals: NicRefusal[] = [];
  for (const [vm, inputs] of wanted) {
    const others = addressesInNetworks([...held, ...[...valid].flatMap(([v, list]) => list.map((n) => ({ vm: v, mac: n.mac, settings: n.settings })))]);
    const r = checkVmNics(vm, inputs, granted, tenant, others);
    if ('refusal' in r) refusals.push(r.refusal); else valid.set(vm, r.nics);
  }
  return { valid, refusals };
}

function checkVmNics(vm: string, inputs: readonly NicInput[], granted: ReadonlyMap<string, FailoverKind>, tenant: string, others: ReturnType<typeof addressesInNetworks>): { nics: StoredNic[] } | { refusal: NicRefusal } {
  let settings: NicSettings[];
  try {
    settings = validateVmNics(inputs.map((n) => ({ mac: n.mac, ...(n.production === undefined ? {} : { production: n.production }), ...(n.test === undefined ? {} : { test: n.test }),
      ...(n.home === undefined ? {} : { home: n.home }) })),
      { otherAddressesInNetwork: others });
  } catch (err) {
    if (!(err instanceof LifeboatError)) throw err;
    return { refusal: attribute(vm, inputs, err.message) };
  }
  const nics: StoredNic[] = [];
  for (const [i, s] of settings.entries()) {
    for (const kind of ['production', 'test'] as const) {
      const network = s[kind]?.network;
      if (network === undefined) continue;
      const has = granted.get(network);
      if (has === undefined) return { refusal: { vm, mac: s.mac, kind, field: 'network', reason: `no network ${network} is granted to tenant ${tenant}` } };
      if (has !== kind) return { refusal: { vm, mac: s.mac, kind, field: 'network', reason: `network ${network} is a ${has} network; ${kind} settings need a ${kind} network` } };
    }
    const reported: string[] = [];
    for (const [j, a] of (inputs[i]!.reportedAddresses ?? []).entries()) {
      const r = canonicalSourceAddress(a);
      if (typeof r !== 'string') return { refusal: { vm, mac: s.mac, field: `reportedAddresses[${j}]`, reason: r.reason } };
      reported.push(r);
    }
    const { mac, ...rest } = s;
    nics.push({ mac, model: inputs[i]!.model ?? 'virtio', settings: rest, reportedAddresses: reported });
  }
  return { nics };
}

/** validateVmNics's `nics[2].test.addresses[1]: reason` told as the NIC's MAC, kind and field. */
function attribute(vm: string, inputs: readonly NicInput[], message: string): NicRefusal {
  const colon = message.indexOf(': ');
  const path = colon < 0 ? '' : message.slice(0, colon);
  const reason = colon < 0 ? message : message.slice(colon + 2);
  const m = /^nics\[(\d+)\](?:\.(production|test|home))?(?:\.(.*))?$/.exec(path);
  if (!m) return { vm, field: path === 'nics' ? '' : path, reason };
  const macAt = (i: number) => {
    const input = inputs[i];
    if (input === undefined) return undefined;
    const n = normaliseMac(input.mac);
    return n.ok ? n.mac : input.mac.slice(0, 40);
  };
  const mac = macAt(Number(m[1]));
  // The reason may name another NIC of the list by index: name it by its MAC, or its position when the MACs are equal.
  const told = reason.replace(/nics\[(\d+)\](?:\.([\w.[\]]+))?/g, (_all, i: string, rest: string | undefined) => {
    const other = macAt(Number(i));
    return other !== undefined && other !== mac ? `nic ${other}${rest ? ` ${rest}` : ''}` : `the NIC at position ${i}${rest ? ` (${rest})` : ''}`;
  });
  return { vm, mac, kind: m[2] as SettingsKind | undefined, field: m[3] ?? (m[2] ? '' : 'mac'), reason: told };
}

/**
 * Writes the checked NIC sets: each VM's NICs become exactly its list, in its order. A NIC written
 * back unchanged keeps its source; one changed or added becomes the operator's (recorded-config.ts).
 */
export async function storeTenantNics(tx: Queryable, tenant: string, valid: ReadonlyMap<string, readonly StoredNic[]>): Promise<void> {
  for (const [vm, nics] of valid) {
    const keep = new Set(nics.map((n) => n.mac));
    const stored = await listVmNics(tx, tenant, vm);
    for (const old of stored) if (!keep.has(old.mac)) await deleteVmNic(tx, tenant, vm, old.mac);
    for (const [position, n] of nics.entries()) {
      const row = { mac: n.mac, position, model: n.model, settings: n.settings, reportedAddresses: n.reportedAddresses };
      const old = stored.find((o) => o.mac === n.mac);
      await putVmNic(tx, tenant, vm, { ...row, source: old && !nicChanged(old, row) ? old.source : 'operator' });
    }
  }
}

/**
 * The NIC as the API shows it; PUT takes back all but `position`, `source` and `agentAddresses`
 * (the agent's report, read-only), which a catalog row always has (the CSV export's rows do not).
 */
export function presentNic(n: Pick<VmNicRow, 'mac' | 'position' | 'model' | 'settings' | 'reportedAddresses'> & Partial<Pick<VmNicRow, 'source' | 'agentAddresses'>>) {
  const s = n.settings as Omit<NicSettings, 'mac'>;
  return {
    mac: n.mac, position: n.position, model: n.model, ...(s.production ? { production: s.production } : {}), ...(s.test ? { test: s.test } : {}),
    ...(s.home ? { home: s.home } : {}),
    reportedAddresses: n.reportedAddresses, ...(n.source === undefined ? {} : { source: n.source, agentAddresses: n.agentAddresses ?? [] }),
  };
}

/** Validates and stores one VM's whole NIC set under the tenant's lock; the first refusal is a 400. */
async function saveVmNics(ctx: ServiceContext, tenant: string, vm: string, change: (stored: TenantNicRow[]) => NicInput[]) {
  return ctx.db.transaction(async (tx) => {
    await lockTenantNetworking(tx, tenant);
    if (!(await getVm(tx, tenant, vm))) throw ErrNotFoundHere(`tenant ${tenant} has no VM ${vm}`);
    const stored = (await listTenantNics(tx, tenant)).filter((n) => n.vm === vm);
    const { valid, refusals } = await checkTenantNics(tx, tenant, new Map([[vm, change(stored)]]));
    if (refusals[0]) throw ErrInvalidArgument(refusalLine(refusals[0]));
    await storeTenantNics(tx, tenant, valid);
    return (await listVmNics(tx, tenant, vm)).map(presentNic);
  });
}

/**
 * Sets one NIC of a VM, whole (added when the VM has no such NIC), validated with the VM's other NICs
 * and the tenant's other VMs as PUT /nics/{mac} does; the portal's NIC form calls it too. The caller
 * has checked the tenant and the role; a refusal is invalid_argument naming the NIC and field.
 */
export async function putNic(ctx: ServiceContext, tenant: string, vm: string, mac: string, body: Omit<NicInput, 'mac'>) {
  await lockObject(ctx.db, `nic:${tenant}/${vm}/${mac}`);
  const nics = await saveVmNics(ctx, tenant, vm, (stored) => {
    const list = stored.map(asInput);
    const i = list.findIndex((n) => n.mac === mac);
    const next: NicInput = { ...body, mac, model: body.model ?? list[i]?.model };
    if (i < 0) list.push(next); else list[i] = next;
    return list;
  });
  return nics.find((n) => n.mac === mac)!;
}

const asInput = (n: TenantNicRow): NicInput => ({ mac: n.mac, model: n.model as NicModelName, ...n.settings, reportedAddresses: n.reportedAddresses });

function macParam(c: Context): string {
  const raw = c.req.param('mac') ?? '';
  const n = normaliseMac(raw);
  if (!n.ok) throw ErrInvalidArgument(`mac: ${n.reason}`);
  return n.mac;
}

export function nicRoutes(ctx: ServiceContext): Hono<Env> {
  const r = new Hono<Env>();
  const vmOf = async (tenant: string, vm: string) => {
    if (!(await getVm(ctx.db, tenant, vm))) throw ErrNotFoundHere(`tenant ${tenant} has no VM ${vm}`);
  };
  const nicOf = async (tenant: string, vm: string, mac: string) => {
    const nic = (await listVmNics(ctx.db, tenant, vm)).find((n) => n.mac === mac);
    return nic && presentNic(nic);
  };
  /** A change of one NIC waits for its lock and checks If-Match against what it is now. */
  const unchanged = (c: Context, tenant: string, vm: string, mac: string, creates = false) => ifMatch(c, ctx.db, `nic:${tenant}/${vm}/${mac}`, () => nicOf(tenant, vm, mac), { creates });

  r.get('/tenants/:tenant/vms/:vm/nics', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    const vm = pathId(c, 'vm');
    await vmOf(tenant, vm);
    const page = pageOf(c, check(nicListQuery, c.req.query(), 'query'), (await listVmNics(ctx.db, tenant, vm)).map(presentNic), { key: (n) => [n.position, n.mac] });
    return c.json({ nics: page.items.map(withEtag), nextCursor: page.nextCursor });
  });
  r.put('/tenants/:tenant/vms/:vm/nics', async (c) => {
    const tenant = mayAdminister(c.get('operator'), pathId(c, 'tenant'));
    const vm = pathId(c, 'vm');
    await vmOf(tenant, vm);
    const body = await readJson(c, nicsPutSchema);
    return c.json({ nics: (await saveVmNics(ctx, tenant, vm, () => body.nics)).map(withEtag) });
  });
  r.get('/tenants/:tenant/vms/:vm/nics/:mac', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    const vm = pathId(c, 'vm');
    await vmOf(tenant, vm);
    const nic = await nicOf(tenant, vm, macParam(c));
    if (!nic) throw ErrNotFoundHere(`VM ${vm} has no NIC ${macParam(c)}`);
    return single(c, nic);
  });
  r.put('/tenants/:tenant/vms/:vm/nics/:mac', async (c) => {
    const tenant = mayAdminister(c.get('operator'), pathId(c, 'tenant'));
    const vm = pathId(c, 'vm');
    await vmOf(tenant, vm);
    const body = await readJson(c, nicBodySchema);
    await unchanged(c, tenant, vm, macParam(c), true);
    return single(c, await putNic(ctx, tenant, vm, macParam(c), body));
  });
  r.delete('/tenants/:tenant/vms/:vm/nics/:mac', async (c) => {
    const tenant = mayAdminister(c.get('operator'), pathId(c, 'tenant'));
    const vm = pathId(c, 'vm');
    await vmOf(tenant, vm);
    const mac = macParam(c);
    await unchanged(c, tenant, vm, mac);
    if (!(await deleteVmNic(ctx.db, tenant, vm, mac))) throw ErrNotFoundHere(`VM ${vm} has no NIC ${mac}`);
    return c.json({ deleted: mac });
  });
  r.get('/tenants/:tenant/vms/:vm/ip-plan', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    const vm = pathId(c, 'vm');
    await vmOf(tenant, vm);
    const { kind } = check(planQuery, c.req.query(), 'query');
    return c.json({ tenant, vm, kind, nics: kind === 'home' ? await homePlanFromCatalog(ctx.db, tenant, vm) : await planVmIp(ctx.db, tenant, vm, kind) });
  });
  return r;
}
