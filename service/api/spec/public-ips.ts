/** Public addresses: the hoster's pools and grants, a tenant's 1:1 mappings (service/api/public-ips.ts). */
import { z } from 'zod';
import { addressListQuery, mappingCreateSchema, mappingListQuery, mappingPutSchema, poolCreateSchema, poolGrantSchema, poolListQuery, revokeQuery } from '../public-ips.js';
import { deleted, etag, page, time } from './common.js';
import type { RouteDoc } from './registry.js';

const tag = 'public addresses';
const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/);
const address = z.string().describe('the public address (IPv6 percent-encoded or not)');
const pool = z.object({
  name: z.string(), createdAt: time(), total: z.number().int(), free: z.number().int(),
  addresses: z.array(z.object({ address: z.string(), tenant: z.string().nullable(), vm: z.string().nullable() })), ...etag,
});
const mapping = z.object({ address: z.string(), vm: z.string(), mac: z.string().nullable(), drAddress: z.string().nullable(), allow: z.array(z.string()), test: z.boolean(), updatedAt: time(), ...etag });
const granted = z.object({ pool: z.string(), tenant: z.string(), granted: z.array(z.string()), addresses: z.array(z.string()) });

export const publicIpRoutes: RouteDoc[] = [
  { method: 'get', path: '/v1/public-ip-pools', tag, query: poolListQuery, summary: 'address pools with every address, its tenant and VM', ok: { 200: z.object({ pools: z.array(pool), ...page }) } },
  { method: 'post', path: '/v1/public-ip-pools', tag, body: poolCreateSchema, errors: [409], summary: 'create a pool from addresses and prefixes', ok: { 201: pool } },
  { method: 'get', path: '/v1/public-ip-pools/{name}', tag, params: { name }, summary: 'one pool', ok: { 200: pool } },
  { method: 'delete', path: '/v1/public-ip-pools/{name}', tag, params: { name }, errors: [409], ifMatch: true, summary: 'delete a pool none of whose addresses is granted', ok: { 200: deleted('pool') } },
  { method: 'post', path: '/v1/public-ip-pools/{name}/grants', tag, params: { name }, body: poolGrantSchema, errors: [409], summary: 'grant a tenant count free addresses, or the addresses named', ok: { 201: granted, 200: granted.describe('nothing new granted') } },
  {
    method: 'delete', path: '/v1/public-ip-pools/{name}/grants/{tenant}', tag, params: { name }, query: revokeQuery, errors: [409], summary: 'take one address (?address=) or all of the pool\'s back from a tenant',
    ok: { 200: z.object({ pool: z.string(), tenant: z.string(), revoked: z.array(z.string()) }) },
  },
  { method: 'get', path: '/v1/tenants/{tenant}/public-ips', tag, query: addressListQuery, summary: 'the addresses granted to the tenant, each with the VM it is mapped to', ok: { 200: z.object({ addresses: z.array(z.object({ address: z.string(), pool: z.string(), vm: z.string().nullable() })), ...page }) } },
  { method: 'get', path: '/v1/tenants/{tenant}/public-ip-mappings', tag, query: mappingListQuery, summary: 'the tenant\'s public address mappings', ok: { 200: z.object({ mappings: z.array(mapping), ...page }) } },
  { method: 'post', path: '/v1/tenants/{tenant}/public-ip-mappings', tag, body: mappingCreateSchema, errors: [409], summary: 'map a granted address 1:1 to a VM\'s DR address with a port allow-list', ok: { 201: mapping } },
  { method: 'get', path: '/v1/tenants/{tenant}/public-ip-mappings/{address}', tag, params: { address }, summary: 'one mapping', ok: { 200: mapping } },
  { method: 'put', path: '/v1/tenants/{tenant}/public-ip-mappings/{address}', tag, params: { address }, body: mappingPutSchema, errors: [409], ifMatch: true, summary: 'replace one mapping (applied within a tick to a VM running now)', ok: { 200: mapping } },
  { method: 'delete', path: '/v1/tenants/{tenant}/public-ip-mappings/{address}', tag, params: { address }, ifMatch: true, summary: 'remove one mapping', ok: { 200: deleted('mapping') } },
];
