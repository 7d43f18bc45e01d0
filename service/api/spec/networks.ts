/** DR networks, a tenant's network mappings and NIC settings in CSV (service/api/networks.ts), and NICs (nics.ts). */
import { z } from 'zod';
import { NetworkMappingSchema } from '../../failover/network/mappings.js';
import { SettingsKinds } from '../../failover/network/settings.js';
import { grantSchema, mappingDeleteQuery, mappingListQuery, mappingsPutSchema, networkCreateSchema, networkListQuery, nicImportSchema, tenantNetworkListQuery } from '../networks.js';
import { nicBodySchema, nicListQuery, nicsPutSchema, planQuery } from '../nics.js';
import { deleted, etag, page, time } from './common.js';
import type { RouteDoc } from './registry.js';

const tag = 'networks';
const kind = z.enum(['production', 'test']);
const network = z.object({ name: z.string(), kind, bridge: z.string(), vlan: z.number().int().nullable(), hosts: z.array(z.string()), tenants: z.array(z.string()), createdAt: time(), ...etag });
/** The whole set, as a change of it answers; GET answers it a page at a time. */
const mappingSet = z.object({ mappings: z.array(NetworkMappingSchema) });
const mappings = mappingSet.safeExtend(page);
const config = z.looseObject({ mode: z.enum(['dhcp', 'static']) });
const nic = z.object({
  mac: z.string(), position: z.number().int(), model: z.string(), production: config.optional(), test: config.optional(), home: config.optional(), reportedAddresses: z.array(z.string()),
  source: z.string().optional(), agentAddresses: z.array(z.string()).optional(), ...etag,
});
const nicSet = z.object({ nics: z.array(nic) });
const nics = nicSet.safeExtend(page);

export const networkRoutes: RouteDoc[] = [
  { method: 'get', path: '/v1/networks', tag, query: networkListQuery, summary: 'DR networks (?tenant=: those granted to it)', ok: { 200: z.object({ networks: z.array(network), ...page }) } },
  { method: 'post', path: '/v1/networks', tag, body: networkCreateSchema, errors: [409], summary: 'create a DR network (a bridge, a VLAN, the failover hosts that have it)', ok: { 201: network } },
  { method: 'get', path: '/v1/networks/{name}', tag, summary: 'one DR network', ok: { 200: network } },
  { method: 'delete', path: '/v1/networks/{name}', tag, errors: [409], ifMatch: true, summary: 'delete a DR network no NIC setting names', ok: { 200: deleted('network') } },
  { method: 'post', path: '/v1/networks/{name}/grants', tag, body: grantSchema, summary: 'grant a DR network to a tenant', ok: { 201: network, 200: network.describe('granted already') } },
  { method: 'delete', path: '/v1/networks/{name}/grants/{tenant}', tag, errors: [409], summary: 'take a DR network back from a tenant', ok: { 200: network } },
  { method: 'get', path: '/v1/tenants/{tenant}/networks', tag, query: tenantNetworkListQuery, summary: 'the DR networks granted to the tenant', ok: { 200: z.object({ networks: z.array(z.object({ name: z.string(), kind })), ...page }) } },
  { method: 'get', path: '/v1/tenants/{tenant}/network-mappings', tag, query: mappingListQuery, summary: 'the tenant\'s subnet mappings (site subnet → DR subnet)', ok: { 200: mappings } },
  { method: 'put', path: '/v1/tenants/{tenant}/network-mappings', tag, body: mappingsPutSchema, summary: 'replace the whole set of mappings, validated whole', ok: { 200: mappingSet } },
  { method: 'post', path: '/v1/tenants/{tenant}/network-mappings', tag, body: NetworkMappingSchema, errors: [409], summary: 'add one mapping', ok: { 201: mappingSet } },
  { method: 'delete', path: '/v1/tenants/{tenant}/network-mappings', tag, query: mappingDeleteQuery, summary: 'remove the mappings of a kind and source subnet', ok: { 200: mappingSet } },
  {
    method: 'post', path: '/v1/tenants/{tenant}/nic-settings/import', tag, body: nicImportSchema, summary: 'NIC settings from CSV (docs/failover-network.md): every row applied or none; a refusal lists each row',
    ok: { 200: z.object({ dryRun: z.boolean(), rows: z.number().int(), vms: z.array(z.string()), nics: z.number().int() }) },
  },
  { method: 'get', path: '/v1/tenants/{tenant}/nic-settings/export', tag, summary: 'the tenant\'s NIC settings as CSV (in JSON: {csv})', ok: { 200: z.object({ csv: z.string() }) } },
  { method: 'get', path: '/v1/tenants/{tenant}/vms/{vm}/nics', tag: 'nics', query: nicListQuery, summary: 'a VM\'s NICs and their failover settings', ok: { 200: nics } },
  { method: 'put', path: '/v1/tenants/{tenant}/vms/{vm}/nics', tag: 'nics', body: nicsPutSchema, errors: [409], summary: 'replace the VM\'s whole NIC set, validated whole', ok: { 200: nicSet } },
  { method: 'get', path: '/v1/tenants/{tenant}/vms/{vm}/nics/{mac}', tag: 'nics', summary: 'one NIC', ok: { 200: nic } },
  { method: 'put', path: '/v1/tenants/{tenant}/vms/{vm}/nics/{mac}', tag: 'nics', body: nicBodySchema, errors: [409], ifMatch: true, summary: 'one NIC, whole', ok: { 200: nic } },
  { method: 'delete', path: '/v1/tenants/{tenant}/vms/{vm}/nics/{mac}', tag: 'nics', ifMatch: true, summary: 'remove one NIC', ok: { 200: deleted('NIC') } },
  {
    method: 'get', path: '/v1/tenants/{tenant}/vms/{vm}/ip-plan', tag: 'nics', query: planQuery, summary: 'the IP plan a failover of this kind would apply, or failback (home), as a dry run: each value with its origin',
    ok: { 200: z.object({ tenant: z.string(), vm: z.string(), kind: z.enum(SettingsKinds), nics: z.array(z.object({ mac: z.string(), name: z.string(), config, values: z.array(z.object({ field: z.string(), value: z.string(), from: z.string() })), notes: z.array(z.string()) })) }) },
  },
];
