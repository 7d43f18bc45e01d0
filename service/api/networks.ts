/**
 * DR networks (hoster-owned), their grants, a tenant's network mappings, and bulk NIC settings as CSV
 * (docs/failover-network.md, "API, CLI and CSV").
 *
 *   GET    /v1/networks (?tenant=)                          hoster-operator: every network with its grants
 *   POST   /v1/networks                                     {name, kind, bridge, vlan?, hosts?}
 *   GET    /v1/networks/{name}
 *   DELETE /v1/networks/{name}                              refused while granted to any tenant
 *   POST   /v1/networks/{name}/grants                       {tenant}
 *   DELETE /v1/networks/{name}/grants/{tenant}              refused while the tenant's NICs or mappings name it
 *   GET    /v1/tenants/{t}/networks                         the networks granted to t: {name, kind} (tenant roles read)
 *   GET    /v1/tenants/{t}/network-mappings                 {mappings}
 *   PUT    /v1/tenants/{t}/network-mappings                 {mappings}: the whole set
 *   POST   /v1/tenants/{t}/network-mappings                 one mapping added to the set
 *   DELETE /v1/tenants/{t}/network-mappings (?kind=&source=) one mapping, or all
 *   POST   /v1/tenants/{t}/nic-settings/import              {csv, dryRun?}: every row applies or none
 *   GET    /v1/tenants/{t}/nic-settings/export              {csv}
 *
 * Tenant-scoped routes: hoster-operator and tenant-admin write, tenant-viewer reads; another tenant
 * answers 404. A tenant names only networks granted to it, never a bridge.
 */
import { Hono } from 'hono';
import { z } from 'zod';
import { parse } from 'csv-parse/sync';
import { ErrInvalidArgument, LifeboatError } from '../../shared/errors.js';
import type { Queryable } from '../catalog/db.js';
import { deleteNetwork, getNetwork, grantedKinds, grantNetwork, insertNetwork, listMappings, listNetworks, lockTenantNetworking, networkUsers, replaceMappings, revokeNetwork } from '../catalog/networks.js';
import type { NetworkRow } from '../catalog/networks.js';
import { getTenant } from '../catalog/tenants.js';
import { listTenantNics } from '../catalog/networks.js';
import { listVms } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import { ErrConflict, ErrNotFoundHere } from '../errors.js';
import type { NetworkMapping } from '../failover/network/mappings.js';
import { MaxMappingsPerTenant, parseMappings } from '../failover/network/mappings.js';
import { networkNameReason } from '../failover/network/names.js';
import { parseIp } from '../failover/network/address.js';
import type { NicConfig, SettingsKind } from '../failover/network/settings.js';
import { SettingsKinds, normaliseMac, parseNicConfig } from '../failover/network/settings.js';
import { idPattern } from '../http/json.js';
import { check, pathId, readJson } from '../http/json.js';
import { ifMatch, single, withEtag } from './etag.js';
import { listQuery, pageOf } from './lists.js';
import { problem, problemResponse, requestIdOf } from '../http/problem.js';
import { mayAdminister, mayRead } from '../trust/roles.js';
import type { ApiClaims } from '../trust/tokens.js';
import type { NicInput, NicModelName } from './nics.js';
import { NicModels, checkTenantNics, presentNic, refusalLine, storeTenantNics } from './nics.js';

type Env = { Variables: { operator: ApiClaims } };

const kind = z.enum(['production', 'test']);
export const networkCreateSchema = z.strictObject({
  name: z.string().max(100),
  kind: kind.default('production'),
  /** A Linux interface name: 1 to 15 of [A-Za-z0-9_.-], starting with a letter or digit. */
  bridge: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/, 'must be a Linux bridge name: 1 to 15 of [A-Za-z0-9_.-], starting with a letter or digit'),
  vlan: z.number().int().min(1).max(4094).optional(),
  hosts: z.array(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'must be a failover host name: 1 to 63 of [A-Za-z0-9._-]')).max(256).default([]),
});
export const grantSchema = z.strictObject({ tenant: z.string().max(64) });
export const mappingsPutSchema = z.strictObject({ mappings: z.array(z.unknown()).max(MaxMappingsPerTenant) });
export const nicImportSchema = z.strictObject({ csv: z.string(), dryRun: z.boolean().default(false) });
export const networkListQuery = listQuery({ tenant: z.string().max(64).optional(), kind: kind.optional() });
export const tenantNetworkListQuery = listQuery({ kind: kind.optional() });
export const mappingListQuery = listQuery({ kind: kind.optional() });
export const mappingDeleteQuery = z.strictObject({ kind: kind.optional(), source: z.string().max(100).optional() });


function networkName(name: string, what = 'network'): string {
  const bad = networkNameReason(name);
  if (bad) throw ErrInvalidArgument(`${what}: ${bad}`);
  return name;
}

export function presentNetwork(n: NetworkRow) {
  return { name: n.name, kind: n.kind, bridge: n.bridge, vlan: n.vlan, hosts: n.hosts, tenants: n.tenants, createdAt: new Date(n.createdAt).toISOString() };
}

/** Each mapping's network must be granted to the tenant and of the mapping's kind. */
async function checkMappingNetworks(db: Queryable, tenant: string, mappings: readonly NetworkMapping[]): Promise<void> {
  const granted = await grantedKinds(db, tenant);
  mappings.forEach((m, i) => {
    if (m.network === undefined) return;
    const has = granted.get(m.network);
    if (has === undefined) throw ErrInvalidArgument(`mappings[${i}].network: no network ${m.network} is granted to tenant ${tenant}`);
    if (has !== m.kind) throw ErrInvalidArgument(`mappings[${i}].network: network ${m.network} is a ${has} network; a ${m.kind} mapping needs a ${m.kind} network`);
  });
}

/** Validates the tenant's whole new set (built from the stored one) and stores it, under the tenant's lock. */
export async function saveMappings(ctx: ServiceContext, tenant: string, change: (stored: NetworkMapping[]) => unknown[]): Promise<NetworkMapping[]> {
  return ctx.db.transaction(async (tx) => {
    if (!(await lockTenantNetworking(tx, tenant))) throw ErrNotFoundHere(`no tenant ${tenant}`);
    const mappings = parseMappings(change(await listMappings(tx, tenant)));
    await checkMappingNetworks(tx, tenant, mappings);
    await replaceMappings(tx, tenant, mappings);
    return mappings;
  });
}

export function networkRoutes(ctx: ServiceContext): Hono<Env> {
  const r = new Hono<Env>();
  const tenantExists = async (tenant: string) => {
    if (!(await getTenant(ctx.db, tenant))) throw ErrNotFoundHere(`no tenant ${tenant}`);
  };

  r.get('/networks', async (c) => {
    mayRead(c.get('operator'), undefined);
    const q = check(networkListQuery, c.req.query(), 'query');
    const page = pageOf(c, q, (await listNetworks(ctx.db, q.tenant)).map(presentNetwork), { key: (n) => [n.name], match: { kind: (n) => n.kind } });
    return c.json({ networks: page.items.map(withEtag), nextCursor: page.nextCursor });
  });
  r.post('/networks', async (c) => {
    mayAdminister(c.get('operator'), undefined);
    const body = await readJson(c, networkCreateSchema);
    const name = networkName(body.name, 'body.name');
    if (!(await insertNetwork(ctx.db, { name, kind: body.kind, bridge: body.bridge, vlan: body.vlan ?? null, hosts: body.hosts }))) {
      throw new LifeboatError('already_exists', `network ${name} already exists`);
    }
    return single(c, presentNetwork((await getNetwork(ctx.db, name))!), 201);
  });
  r.get('/networks/:name', async (c) => {
    mayRead(c.get('operator'), undefined);
    const name = networkName(c.req.param('name'));
    const n = await getNetwork(ctx.db, name);
    if (!n) throw ErrNotFoundHere(`no network ${name}`);
    return single(c, presentNetwork(n));
  });
  r.delete('/networks/:name', async (c) => {
    mayAdminister(c.get('operator'), undefined);
    const name = networkName(c.req.param('name'));
    await ifMatch(c, ctx.db, `network:${name}`, async () => {
      const now = await getNetwork(ctx.db, name);
      return now && presentNetwork(now);
    });
    const n = await getNetwork(ctx.db, name);
    if (!n) throw ErrNotFoundHere(`no network ${name}`);
    if (n.tenants.length > 0 || !(await deleteNetwork(ctx.db, name))) {
      throw ErrConflict('network_granted', `network ${name} is granted to tenant${n.tenants.length === 1 ? '' : 's'} ${n.tenants.join(', ') || '(one just granted)'}: revoke the grants first`);
    }
    return c.json({ deleted: name });
  });
  r.post('/networks/:name/grants', async (c) => {
    mayAdminister(c.get('operator'), undefined);
    const name = networkName(c.req.param('name'));
    const { tenant } = await readJson(c, grantSchema);
    if (!(await getNetwork(ctx.db, name))) throw ErrNotFoundHere(`no network ${name}`);
    await tenantExists(tenant);
    const created = await grantNetwork(ctx.db, name, tenant);
    return single(c, presentNetwork((await getNetwork(ctx.db, name))!), created ? 201 : 200);
  });
  r.delete('/networks/:name/grants/:tenant', async (c) => {
    mayAdminister(c.get('operator'), undefined);
    const name = networkName(c.req.param('name'));
    const tenant = pathId(c, 'tenant');
    await ctx.db.transaction(async (tx) => {
      await lockTenantNetworking(tx, tenant);
      const users = await networkUsers(tx, name, tenant);
      if (users.length > 0) throw ErrConflict('network_in_use', `network ${name} is still used by tenant ${tenant}: ${users.join(', ')}`);
      if (!(await revokeNetwork(tx, name, tenant))) throw ErrNotFoundHere(`network ${name} is not granted to tenant ${tenant}`);
    });
    return single(c, presentNetwork((await getNetwork(ctx.db, name))!));
  });

  r.get('/tenants/:tenant/networks', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    await tenantExists(tenant);
    const q = check(tenantNetworkListQuery, c.req.query(), 'query');
    const page = pageOf(c, q, (await listNetworks(ctx.db, tenant)).map((n) => ({ name: n.name, kind: n.kind })), { key: (n) => [n.name], match: { kind: (n) => n.kind } });
    return c.json({ networks: page.items, nextCursor: page.nextCursor });
  });

  r.get('/tenants/:tenant/network-mappings', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    await tenantExists(tenant);
    const q = check(mappingListQuery, c.req.query(), 'query');
    const all = await listMappings(ctx.db, tenant);
    const position = new Map(all.map((m, i) => [m, i]));
    const page = pageOf(c, q, all, { key: (m) => [position.get(m)!], match: { kind: (m) => m.kind } });
    return c.json({ mappings: page.items, nextCursor: page.nextCursor });
  });
  r.put('/tenants/:tenant/network-mappings', async (c) => {
    const tenant = mayAdminister(c.get('operator'), pathId(c, 'tenant'));
    const body = await readJson(c, mappingsPutSchema);
    return c.json({ mappings: await saveMappings(ctx, tenant, () => body.mappings) });
  });
  r.post('/tenants/:tenant/network-mappings', async (c) => {
    const tenant = mayAdminister(c.get('operator'), pathId(c, 'tenant'));
    let one: unknown;
    try {
      one = await c.req.json();
    } catch {
      throw ErrInvalidArgument('request body is not JSON');
    }
    return c.json({ mappings: await saveMappings(ctx, tenant, (stored) => [...stored, one]) }, 201);
  });
  r.delete('/tenants/:tenant/network-mappings', async (c) => {
    const tenant = mayAdminister(c.get('operator'), pathId(c, 'tenant'));
    const q = check(mappingDeleteQuery, c.req.query(), 'query');
    if ((q.kind === undefined) !== (q.source === undefined)) throw ErrInvalidArgument('query: give both kind and source to delete one mapping, or neither to delete all');
    const mappings = await saveMappings(ctx, tenant, (stored) => {
      if (q.kind === undefined) return [];
      const i = stored.findIndex((m) => m.kind === q.kind && m.source === q.source);
      if (i < 0) throw ErrNotFoundHere(`tenant ${tenant} has no ${q.kind} mapping of ${q.source!.slice(0, 60)}`);
      return stored.filter((_, j) => j !== i);
    });
    return c.json({ mappings });
  });

  r.post('/tenants/:tenant/nic-settings/import', async (c) => {
    const tenant = mayAdminister(c.get('operator'), pathId(c, 'tenant'));
    await tenantExists(tenant);
    const body = await readJson(c, nicImportSchema);
    const result = await importNicCsv(ctx.db, tenant, body.csv, body.dryRun);
    if ('refused' in result) {
      const detail = [result.summary, ...result.refused.map((e) => `line ${e.line}: ${e.message}`)].join('\n');
      return problemResponse(c, problem('invalid_argument', 400, detail, { rows: result.refused, requestId: requestIdOf(c) }));
    }
    return c.json(result);
  });
  r.get('/tenants/:tenant/nic-settings/export', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    await tenantExists(tenant);
    return c.json({ csv: await exportNicCsv(ctx.db, tenant) });
  });
  return r;
}

// ---- bulk NIC settings as CSV ----

/** The columns every file has, and those it may have (docs/failover-network.md). */
export const CsvColumns = ['vm', 'mac', 'kind', 'addresses', 'gateway', 'dns', 'network'] as const;
export const CsvOptionalColumns = ['search', 'mtu', 'model'] as const;
export const MaxImportRows = 4096;

interface CsvRefusal { line: number; message: string }
type ImportResult = { dryRun: boolean; rows: number; vms: string[]; nics: number } | { refused: CsvRefusal[]; summary: string };

interface CsvRow { line: number; vm: string; mac: string; kind: SettingsKind; config: NicConfig | undefined; model: NicModelName | undefined }

const list = (v: string) => v.split(/[\s;]+/).filter((x) => x.length > 0);

/**
 * Reads a CSV of NIC settings and applies it whole or not at all: every row is checked on its own
 * (each bad row one line with its line number), then each VM's resulting NIC set as a whole against
 * the tenant's other VMs and grants. A row sets one kind of one NIC (production, test or home); the NIC's other kinds, and NICs
 * the file does not name, stay as stored.
 */
export async function importNicCsv(db: ServiceContext['db'], tenant: string, csv: string, dryRun: boolean): Promise<ImportResult> {
  let records: { record: string[]; info: { lines: number } }[];
  try {
    records = parse(csv, { info: true, relax_column_count: true, skip_empty_lines: true, trim: true, bom: true, comment: '#', comment_no_infix: true }) as unknown as typeof records;
  } catch (err) {
    throw ErrInvalidArgument(`CSV: ${(err as Error).message}`);
  }
  const header = records.shift();
  if (!header) throw ErrInvalidArgument('CSV: the file is empty (expected a header line: vm,mac,kind,addresses,gateway,dns,network)');
  const names = header.record.map((h) => h.toLowerCase());
  const known = new Set<string>([...CsvColumns, ...CsvOptionalColumns]);
  const unknown = names.filter((n) => !known.has(n));
  const missing = CsvColumns.filter((c) => !names.includes(c));
  if (missing.length > 0 || unknown.length > 0) {
    const parts = [missing.length ? `missing column${missing.length > 1 ? 's' : ''} ${missing.join(', ')}` : '', unknown.length ? `unknown column${unknown.length > 1 ? 's' : ''} ${unknown.map((u) => JSON.stringify(u.slice(0, 40))).join(', ')}` : ''];
    throw ErrInvalidArgument(`CSV line ${header.info.lines}: ${parts.filter(Boolean).join('; ')} (the header is vm,mac,kind,addresses,gateway,dns,network[,search,mtu,model])`);
  }
  if (new Set(names).size !== names.length) throw ErrInvalidArgument(`CSV line ${header.info.lines}: a column is named twice`);
  if (records.length > MaxImportRows) throw ErrInvalidArgument(`CSV: at most ${MaxImportRows} rows per file (got ${records.length})`);

  const refused: CsvRefusal[] = [];
  const parsed: CsvRow[] = [];
  for (const { record, info } of records) {
    const field = (name: string) => record[names.indexOf(name)] ?? '';
    try {
      if (record.length !== names.length) throw ErrInvalidArgument(`expected ${names.length} fields, got ${record.length}`);
      parsed.push(csvRow(info.lines, field));
    } catch (err) {
      if (!(err instanceof LifeboatError)) throw err;
      refused.push({ line: info.lines, message: err.message });
    }
  }

  const lineOf = new Map<string, number>();
  const rows = parsed.filter((row) => {
    const key = `${row.vm} ${row.mac} ${row.kind}`;
    const first = lineOf.get(key);
    if (first !== undefined) refused.push({ line: row.line, message: `vm ${row.vm} nic ${row.mac} ${row.kind}: already set on line ${first}` });
    else lineOf.set(key, row.line);
    return first === undefined;
  });

  return db.transaction(async (tx) => {
    await lockTenantNetworking(tx, tenant);
    const vms = new Set((await listVms(tx, tenant)).map((v) => v.name));
    const stored = await listTenantNics(tx, tenant);
    const wanted = new Map<string, NicInput[]>();
    for (const row of rows) {
      if (!vms.has(row.vm)) { refused.push({ line: row.line, message: `tenant ${tenant} has no VM ${row.vm}` }); continue; }
      let nics = wanted.get(row.vm);
      if (!nics) {
        nics = stored.filter((n) => n.vm === row.vm).map((n) => ({ mac: n.mac, model: n.model as NicModelName, ...n.settings, reportedAddresses: n.reportedAddresses }));
        wanted.set(row.vm, nics);
      }
      let nic = nics.find((n) => n.mac === row.mac);
      if (!nic) { nic = { mac: row.mac }; nics.push(nic); }
      if (row.config === undefined) delete nic[row.kind]; else nic[row.kind] = row.config;
      if (row.model !== undefined) nic.model = row.model;
    }
    const { valid, refusals } = await checkTenantNics(tx, tenant, wanted);
    for (const r of refusals) {
      const line = lineOf.get(`${r.vm} ${r.mac} ${r.kind ?? 'production'}`) ?? lineOf.get(`${r.vm} ${r.mac} ${r.kind ?? 'test'}`) ?? rows.find((x) => x.vm === r.vm)?.line ?? 0;
      refused.push({ line, message: refusalLine(r) });
    }
    if (refused.length > 0) {
      refused.sort((a, b) => a.line - b.line);
      const bad = new Set(refused.map((e) => e.line)).size;
      return { refused, summary: `CSV: ${bad} of ${records.length} row${records.length === 1 ? '' : 's'} refused; nothing was imported` };
    }
    if (!dryRun) await storeTenantNics(tx, tenant, valid);
    return { dryRun, rows: rows.length, vms: [...valid.keys()], nics: [...valid.values()].reduce((n, l) => n + l.length, 0) };
  });
}

/** One row checked on its own; the message names the field. */
function csvRow(line: number, field: (name: string) => string): CsvRow {
  const vm = field('vm');
  if (!idPattern.test(vm)) throw ErrInvalidArgument(`vm ${JSON.stringify(vm.slice(0, 60))} is not a valid VM name (1 to 64 of [a-z0-9_-], starting with a letter or digit)`);
  const m = normaliseMac(field('mac'));
  if (!m.ok) throw ErrInvalidArgument(`mac: ${m.reason}`);
  const kind = field('kind').toLowerCase();
  if (kind !== 'production' && kind !== 'test' && kind !== 'home') throw ErrInvalidArgument(`kind ${JSON.stringify(field('kind').slice(0, 40))}: expected production, test or home`);
  const model = field('model').toLowerCase();
  if (model !== '' && !(NicModels as readonly string[]).includes(model)) throw ErrInvalidArgument(`model ${JSON.stringify(model.slice(0, 40))}: expected ${NicModels.join(', ')}`);
  const where = `vm ${vm} nic ${m.mac} ${kind}`;
  const addresses = list(field('addresses'));
  const gateways = list(field('gateway'));
  const dns = list(field('dns'));
  const search = list(field('search'));
  const network = field('network');
  const mtuText = field('mtu');
  const mtu = mtuText === '' ? undefined : /^\d{1,6}$/.test(mtuText) ? Number(mtuText) : NaN;
  if (Number.isNaN(mtu)) throw ErrInvalidArgument(`${where}.mtu: ${JSON.stringify(mtuText.slice(0, 20))} is not a whole number`);
  const common = { ...(network ? { network } : {}), ...(mtu === undefined ? {} : { mtu }) };
  const base = { line, vm, mac: m.mac, kind, model: model === '' ? undefined : model as NicModelName };

  let config: NicConfig | undefined;
  if (addresses.length === 0) {
    if (gateways.length || dns.length || search.length || network || mtu !== undefined) throw ErrInvalidArgument(`${where}: a row without addresses leaves the kind blank (mappings fill it in) and takes no gateway, dns, search, network or mtu`);
  } else if (addresses.length === 1 && (addresses[0] === 'dhcp' || addresses[0] === 'dhcp6')) {
    if (gateways.length || dns.length || search.length) throw ErrInvalidArgument(`${where}: a DHCP row takes no gateway, dns or search (the DHCP server gives them)`);
    config = parseNicConfig({ mode: 'dhcp', ...(addresses[0] === 'dhcp6' ? { dhcp6: true } : {}), ...common }, where, kind);
  } else {
    const gw: { gateway4?: string; gateway6?: string } = {};
    for (const g of gateways) {
      const ip = parseIp(g);
      if (!ip.ok) throw ErrInvalidArgument(`${where}.gateway: ${ip.reason}`);
      const key = ip.value.kind() === 'ipv4' ? 'gateway4' : 'gateway6';
      if (gw[key] !== undefined) throw ErrInvalidArgument(`${where}.gateway: at most one IPv4 and one IPv6 gateway (got ${gw[key]} and ${g})`);
      gw[key] = g;
    }
    config = parseNicConfig({ mode: 'static', addresses, ...gw, dns, search, ...common }, where, kind);
  }
  return { ...base, kind, config };
}

/** Every NIC of the tenant, one row per kind it has (a NIC with none: one blank production row). */
export async function exportNicCsv(db: Queryable, tenant: string): Promise<string> {
  const lines = [[...CsvColumns, ...CsvOptionalColumns].join(',')];
  for (const n of (await listTenantNics(db, tenant)).map((x) => ({ vm: x.vm, ...presentNic(x) }))) {
    const kinds = SettingsKinds.filter((k) => n[k] !== undefined);
    for (const k of kinds.length ? kinds : ['production' as const]) {
      const c = n[k] as NicConfig | undefined;
      const cells = !c ? ['', '', '', '', '', '']
        : c.mode === 'dhcp' ? [c.dhcp6 ? 'dhcp6' : 'dhcp', '', '', c.network ?? '', '', c.mtu === undefined ? '' : String(c.mtu)]
          : [c.addresses.join(' '), [c.gateway4, c.gateway6].filter(Boolean).join(' '), c.dns.join(' '), c.network ?? '', c.search.join(' '), c.mtu === undefined ? '' : String(c.mtu)];
      lines.push([n.vm, n.mac, k, ...cells, n.model].map(csvCell).join(','));
    }
  }
  return `${lines.join('\n')}\n`;
}

/** Our values never hold a comma, quote or newline (they are validated); quoted anyway if one did. */
function csvCell(v: string): string {
  return /[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}
