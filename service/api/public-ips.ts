/**
 * Public addresses for failed-over VMs (docs/failover-public-ips.md).
 *
 *   GET    /v1/public-ip-pools (?tenant=)                     hoster-operator: pools with every address, its tenant and VM
 *   POST   /v1/public-ip-pools                                {name, addresses: [address | prefix]}
 *   GET    /v1/public-ip-pools/{name}
 *   DELETE /v1/public-ip-pools/{name}                         refused while any address is granted
 *   POST   /v1/public-ip-pools/{name}/grants                  {tenant, count} or {tenant, addresses}
 *   DELETE /v1/public-ip-pools/{name}/grants/{tenant} (?address=)  one address, or all of the tenant's; refused while mapped
 *   GET    /v1/tenants/{t}/public-ips                         the addresses granted to t, each with its VM
 *   GET    /v1/tenants/{t}/public-ip-mappings (?vm=)          {mappings}
 *   POST   /v1/tenants/{t}/public-ip-mappings                 {address, vm, mac?, drAddress?, allow, test?}
 *   GET    /v1/tenants/{t}/public-ip-mappings/{address}
 *   PUT    /v1/tenants/{t}/public-ip-mappings/{address}       {vm, mac?, drAddress?, allow, test?}: the whole mapping
 *   DELETE /v1/tenants/{t}/public-ip-mappings/{address}
 *
 * Tenant-scoped routes: hoster-operator and tenant-admin write, tenant-viewer reads; another tenant,
 * and an address not granted to the tenant, answer 404 as if absent. A mapping takes effect on the
 * failover host at the VM's next start, or within a tick for a VM running now.
 */
import type { Context } from 'hono';
import { Hono } from 'hono';
import { z } from 'zod';
import { ErrInvalidArgument, LifeboatError } from '../../shared/errors.js';
import { listVmNics } from '../catalog/failovers.js';
import { lockTenantNetworking } from '../catalog/networks.js';
import type { PoolRow, PublicMappingRow } from '../catalog/public-ips.js';
import {
  deletePool, deletePublicMapping, getPool, getPublicAddress, getPublicMapping, grantAddresses, insertPool, listPools, listPublicMappings,
  lockPool, poolsHolding, putPublicMapping, revokeAddresses, tenantAddresses,
} from '../catalog/public-ips.js';
import { getTenant } from '../catalog/tenants.js';
import { getVm } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import { ErrConflict, ErrNotFoundHere } from '../errors.js';
import type { Ip } from '../failover/network/address.js';
import { familyOf, parseIp, unusableReason } from '../failover/network/address.js';
import { parseAllow } from '../failover/network/nat.js';
import { networkNameReason } from '../failover/network/names.js';
import { expandPoolAddresses, MaxPoolAddresses } from '../failover/network/pool.js';
import { normaliseMac } from '../failover/network/settings.js';
import { check, idPattern, pathId, readJson } from '../http/json.js';
import { ifMatch, single, withEtag } from './etag.js';
import { listQuery, pageOf } from './lists.js';
import { mayAdminister, mayRead } from '../trust/roles.js';
import type { ApiClaims } from '../trust/tokens.js';

type Env = { Variables: { operator: ApiClaims } };

export const poolCreateSchema = z.strictObject({ name: z.string().max(100), addresses: z.array(z.string().max(64)).min(1).max(MaxPoolAddresses) });
export const poolGrantSchema = z.strictObject({
  tenant: z.string().max(64),
  count: z.number().int().min(1).max(MaxPoolAddresses).optional(),
  addresses: z.array(z.string().max(64)).min(1).max(MaxPoolAddresses).optional(),
});
const mappingFields = {
  vm: z.string().regex(idPattern, 'must be a VM id (1 to 64 of [a-z0-9_-], starting with a letter or digit)'),
  mac: z.string().max(64).optional(),
  drAddress: z.string().max(64).optional(),
  /** Checked by parseAllow, whose refusals name the entry. */
  allow: z.unknown().optional().describe('a list of tcp/PORT, udp/PORT, tcp/FROM-TO, udp/FROM-TO, icmp (at most 64); none: outbound only'),
  test: z.boolean().default(false),
};
export const mappingCreateSchema = z.strictObject({ address: z.string().max(64), ...mappingFields });
export const mappingPutSchema = z.strictObject(mappingFields);
export const poolListQuery = listQuery({ tenant: z.string().max(64).optional() });
export const mappingListQuery = listQuery({ vm: z.string().max(64).optional() });
export const addressListQuery = listQuery({ vm: z.string().max(64).optional(), pool: z.string().max(100).optional() });
export const revokeQuery = z.strictObject({ address: z.string().max(64).optional() });


function poolName(name: string, what = 'pool'): string {
  const bad = networkNameReason(name);
  if (bad) throw ErrInvalidArgument(`${what}: ${bad.replace(/network name/g, 'pool name').replace('a network name', 'a pool name')}`);
  return name;
}

/** One address; `what` names the field. */
function ipOf(text: string, what: string): Ip {
  const ip = parseIp(text);
  if (!ip.ok) throw ErrInvalidArgument(`${what}: ${ip.reason}`);
  return ip.value;
}

/** One address in canonical text. */
const address = (text: string, what: string) => ipOf(text, what).toString();
const familyOfText = (text: string) => familyOf(ipOf(text, 'address'));

export function presentPool(p: PoolRow) {
  return {
    name: p.name, createdAt: new Date(p.createdAt).toISOString(), total: p.addresses.length, free: p.addresses.filter((a) => a.tenant === null).length,
    addresses: p.addresses.map((a) => ({ address: a.address, tenant: a.tenant, vm: a.vm })),
  };
}

export function presentMapping(m: PublicMappingRow) {
  return { address: m.address, vm: m.vm, mac: m.mac, drAddress: m.drAddress, allow: m.allow, test: m.test, updatedAt: new Date(m.updatedAt).toISOString() };
}

type MappingInput = Omit<PublicMappingRow, 'createdAt' | 'updatedAt'>;

/** A mapping's body on its own: the allow-list, the MAC's and the DR address's form, the family kept. */
function parseMappingBody(tenant: string, publicAddress: string, body: z.infer<typeof mappingPutSchema>): MappingInput {
  const allow = parseAllow(body.allow ?? []);
  let mac: string | null = null;
  if (body.mac !== undefined) {
    const m = normaliseMac(body.mac);
    if (!m.ok) throw ErrInvalidArgument(`mac: ${m.reason}`);
    mac = m.mac;
  }
  let drAddress: string | null = null;
  if (body.drAddress !== undefined) {
    const dr = ipOf(body.drAddress, 'drAddress');
    const bad = unusableReason(dr);
    if (bad) throw ErrInvalidArgument(`drAddress: ${bad}`);
    drAddress = dr.toString();
    if (familyOf(dr) !== familyOfText(publicAddress)) {
      throw ErrInvalidArgument(`drAddress: ${drAddress} and the public address ${publicAddress} are of different families (1:1 NAT keeps the family)`);
    }
  }
  if (mac === null && drAddress === null) throw ErrInvalidArgument('give mac (the NIC whose planned address is the DR address) or drAddress, or both');
  return { address: publicAddress, tenant, vm: body.vm, mac, drAddress, allow, test: body.test };
}

/** The mapping's VM is the tenant's, and its NIC one of the VM's. */
async function checkMappingTarget(ctx: ServiceContext, m: MappingInput): Promise<void> {
  if (!(await getVm(ctx.db, m.tenant, m.vm))) throw ErrNotFoundHere(`tenant ${m.tenant} has no VM ${m.vm}`);
  if (m.mac !== null && !(await listVmNics(ctx.db, m.tenant, m.vm)).some((n) => n.mac === m.mac)) {
    throw ErrInvalidArgument(`mac: VM ${m.vm} has no NIC ${m.mac} (add it with PUT /v1/tenants/${m.tenant}/vms/${m.vm}/nics)`);
  }
}

/** Refuses a second mapping that would land on the same VM address (1:1 both ways). */
function checkOneToOne(m: MappingInput, others: readonly PublicMappingRow[]): void {
  const family = familyOfText(m.address);
  for (const o of others) {
    if (o.address === m.address || o.vm !== m.vm || familyOfText(o.address) !== family) continue;
    const sameNic = m.mac !== null && o.mac === m.mac && (m.drAddress === null || o.drAddress === null || m.drAddress === o.drAddress);
    const sameAddress = m.drAddress !== null && o.drAddress === m.drAddress;
    if (sameNic || sameAddress) {
      throw ErrConflict('public_ip_taken', `VM ${m.vm} ${sameAddress ? `address ${m.drAddress}` : `NIC ${m.mac}`} already has public address ${o.address}: one public address per VM address`);
    }
  }
}

export function publicIpRoutes(ctx: ServiceContext): Hono<Env> {
  const r = new Hono<Env>();
  const tenantExists = async (tenant: string) => {
    if (!(await getTenant(ctx.db, tenant))) throw ErrNotFoundHere(`no tenant ${tenant}`);
  };
  const poolOrNotFound = async (name: string) => {
    const p = await getPool(ctx.db, name);
    if (!p) throw ErrNotFoundHere(`no public address pool ${name}`);
    return p;
  };

  r.get('/public-ip-pools', async (c) => {
    mayRead(c.get('operator'), undefined);
    const q = check(poolListQuery, c.req.query(), 'query');
    const page = pageOf(c, q, (await listPools(ctx.db, q.tenant)).map(presentPool), { key: (p) => [p.name] });
    return c.json({ pools: page.items.map(withEtag), nextCursor: page.nextCursor });
  });
  r.post('/public-ip-pools', async (c) => {
    mayAdminister(c.get('operator'), undefined);
    const body = await readJson(c, poolCreateSchema);
    const name = poolName(body.name, 'name');
    const addresses = expandPoolAddresses(body.addresses);
    await ctx.db.transaction(async (tx) => {
      const held = await poolsHolding(tx, addresses);
      const [first] = held;
      if (first) throw ErrConflict('public_ip_pooled', `${first[0]} is already in pool ${first[1]}${held.size > 1 ? ` (and ${held.size - 1} more address(es) are in pools)` : ''}`);
      if (!(await insertPool(tx, name, addresses))) throw new LifeboatError('already_exists', `public address pool ${name} already exists`);
    });
    return single(c, presentPool((await getPool(ctx.db, name))!), 201);
  });
  r.get('/public-ip-pools/:name', async (c) => {
    mayRead(c.get('operator'), undefined);
    return single(c, presentPool(await poolOrNotFound(poolName(c.req.param('name')))));
  });
  r.delete('/public-ip-pools/:name', async (c) => {
    mayAdminister(c.get('operator'), undefined);
    const name = poolName(c.req.param('name'));
    await ifMatch(c, ctx.db, `public-ip-pool:${name}`, async () => {
      const now = await getPool(ctx.db, name);
      return now && presentPool(now);
    });
    const p = await poolOrNotFound(name);
    if (!(await deletePool(ctx.db, p.name))) {
      const tenants = [...new Set(p.addresses.flatMap((a) => (a.tenant ? [a.tenant] : [])))];
      throw ErrConflict('public_ip_granted', `pool ${p.name} has addresses granted to tenant${tenants.length === 1 ? '' : 's'} ${tenants.join(', ') || '(one just granted)'}: revoke them first`);
    }
    return c.json({ deleted: p.name });
  });
  r.post('/public-ip-pools/:name/grants', async (c) => {
    mayAdminister(c.get('operator'), undefined);
    const name = poolName(c.req.param('name'));
    const body = await readJson(c, poolGrantSchema);
    if ((body.count === undefined) === (body.addresses === undefined)) throw ErrInvalidArgument('give count (that many free addresses of the pool) or addresses, not both');
    await tenantExists(body.tenant);
    const granted = await ctx.db.transaction(async (tx) => {
      if (!(await lockPool(tx, name))) throw ErrNotFoundHere(`no public address pool ${name}`);
      const pool = (await getPool(tx, name))!;
      let wanted: string[];
      if (body.count !== undefined) {
        const free = pool.addresses.filter((a) => a.tenant === null);
        if (free.length < body.count) throw ErrConflict('public_ip_pool_exhausted', `pool ${name} has ${free.length} free address(es); ${body.count} asked`);
        wanted = free.slice(0, body.count).map((a) => a.address);
      } else {
        wanted = body.addresses!.map((a, i) => address(a, `addresses[${i}]`));
        wanted.forEach((a, i) => {
          const row = pool.addresses.find((x) => x.address === a);
          if (!row) throw ErrInvalidArgument(`addresses[${i}]: ${a} is not in pool ${name}`);
          if (row.tenant !== null && row.tenant !== body.tenant) throw ErrConflict('public_ip_granted', `${a} is granted to tenant ${row.tenant}`);
        });
        wanted = wanted.filter((a) => pool.addresses.find((x) => x.address === a)!.tenant === null);
      }
      await grantAddresses(tx, name, body.tenant, wanted);
      return wanted;
    });
    const pool = (await getPool(ctx.db, name))!;
    return c.json({ pool: name, tenant: body.tenant, granted, addresses: pool.addresses.filter((a) => a.tenant === body.tenant).map((a) => a.address) }, granted.length > 0 ? 201 : 200);
  });
  r.delete('/public-ip-pools/:name/grants/:tenant', async (c) => {
    mayAdminister(c.get('operator'), undefined);
    const name = poolName(c.req.param('name'));
    const tenant = c.req.param('tenant');
    if (!idPattern.test(tenant)) throw ErrInvalidArgument(`tenant ${JSON.stringify(tenant.slice(0, 80))} is not a valid id`);
    const q = check(revokeQuery, c.req.query(), 'query');
    const one = q.address === undefined ? undefined : address(q.address, 'query.address');
    const revoked = await ctx.db.transaction(async (tx) => {
      if (!(await lockPool(tx, name))) throw ErrNotFoundHere(`no public address pool ${name}`);
      await lockTenantNetworking(tx, tenant);
      const mine = (await getPool(tx, name))!.addresses.filter((a) => a.tenant === tenant && (one === undefined || a.address === one));
      if (mine.length === 0) throw ErrNotFoundHere(one ? `${one} of pool ${name} is not granted to tenant ${tenant}` : `pool ${name} grants tenant ${tenant} nothing`);
      const mapped = mine.filter((a) => a.vm !== null);
      if (mapped.length > 0) throw ErrConflict('public_ip_mapped', `tenant ${tenant} maps ${mapped.map((a) => `${a.address} to VM ${a.vm}`).join(', ')}: unmap first`);
      await revokeAddresses(tx, name, tenant, mine.map((a) => a.address));
      return mine.map((a) => a.address);
    });
    return c.json({ pool: name, tenant, revoked });
  });

  r.get('/tenants/:tenant/public-ips', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    await tenantExists(tenant);
    const q = check(addressListQuery, c.req.query(), 'query');
    const page = pageOf(c, q, await tenantAddresses(ctx.db, tenant), { key: (a) => [a.pool, Number(a.position)], match: { vm: (a) => a.vm, pool: (a) => a.pool } });
    return c.json({ addresses: page.items.map((a) => ({ address: a.address, pool: a.pool, vm: a.vm })), nextCursor: page.nextCursor });
  });
  r.get('/tenants/:tenant/public-ip-mappings', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    await tenantExists(tenant);
    const q = check(mappingListQuery, c.req.query(), 'query');
    const page = pageOf(c, q, (await listPublicMappings(ctx.db, tenant, q.vm)).map(presentMapping), { key: (m) => [m.address] });
    return c.json({ mappings: page.items.map(withEtag), nextCursor: page.nextCursor });
  });
  /** Checks the body, then that the address is the tenant's and the VM and NIC exist; stores it whole or not at all. */
  const save = async (c: Context<Env>, tenant: string, addressText: string, body: z.infer<typeof mappingPutSchema>, create: boolean) => {
    const publicAddress = address(addressText, 'address');
    const m = parseMappingBody(tenant, publicAddress, body);
    if ((await getPublicAddress(ctx.db, publicAddress))?.tenant !== tenant) throw ErrNotFoundHere(`tenant ${tenant} has no public address ${publicAddress}`);
    await checkMappingTarget(ctx, m);
    return ctx.db.transaction(async (tx) => {
      if (!(await lockTenantNetworking(tx, tenant))) throw ErrNotFoundHere(`no tenant ${tenant}`);
      checkOneToOne(m, await listPublicMappings(tx, tenant, m.vm));
      const row = await putPublicMapping(tx, m, create);
      if (!row) {
        if (create) throw ErrConflict('public_ip_mapped', `${publicAddress} is already mapped (change it with PUT ${c.req.path}/${encodeURIComponent(publicAddress)})`);
        throw ErrNotFoundHere(`tenant ${tenant} has no mapping of ${publicAddress}`);
      }
      return row;
    });
  };
  /** A change of one mapping waits for its lock and checks If-Match against what it is now. */
  const unchanged = (c: Context<Env>, tenant: string, a: string) => ifMatch(c, ctx.db, `public-ip-mapping:${tenant}/${a}`, async () => {
    const now = await getPublicMapping(ctx.db, tenant, a);
    return now && presentMapping(now);
  });
  r.post('/tenants/:tenant/public-ip-mappings', async (c) => {
    const tenant = mayAdminister(c.get('operator'), pathId(c, 'tenant'));
    const body = await readJson(c, mappingCreateSchema);
    return single(c, presentMapping(await save(c, tenant, body.address, body, true)), 201);
  });
  r.get('/tenants/:tenant/public-ip-mappings/:address', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    const a = address(c.req.param('address'), 'address');
    const m = await getPublicMapping(ctx.db, tenant, a);
    if (!m) throw ErrNotFoundHere(`tenant ${tenant} has no mapping of ${a}`);
    return single(c, presentMapping(m));
  });
  r.put('/tenants/:tenant/public-ip-mappings/:address', async (c) => {
    const tenant = mayAdminister(c.get('operator'), pathId(c, 'tenant'));
    const body = await readJson(c, mappingPutSchema);
    await unchanged(c, tenant, address(c.req.param('address'), 'address'));
    return single(c, presentMapping(await save(c, tenant, c.req.param('address'), body, false)));
  });
  r.delete('/tenants/:tenant/public-ip-mappings/:address', async (c) => {
    const tenant = mayAdminister(c.get('operator'), pathId(c, 'tenant'));
    const a = address(c.req.param('address'), 'address');
    await unchanged(c, tenant, a);
    if (!(await deletePublicMapping(ctx.db, tenant, a))) throw ErrNotFoundHere(`tenant ${tenant} has no mapping of ${a}`);
    return c.json({ deleted: a });
  });
  return r;
}
