/** API keys, the portal's users and the audit log (service/api/api-keys.ts, users.ts, audit.ts). */
import { z } from 'zod';
import { apiKeyCreateSchema, apiKeyListQuery } from '../api-keys.js';
import { auditQuery } from '../audit.js';
import { resetSchema, userCreateSchema, userListQuery, userPatchSchema } from '../users.js';
import { etag, page, time } from './common.js';
import type { RouteDoc } from './registry.js';

const id = z.string().regex(/^[0-9a-f]{16}$/);
const key = z.object({
  id: z.string(), name: z.string(), role: z.string(), tenant: z.string().nullable(), createdAt: time(), createdBy: z.string(),
  expiresAt: time().nullable(), revokedAt: time().nullable(), revokedBy: z.string().nullable(), lastUsedAt: time().nullable(), ...etag,
});
const user = z.object({ username: z.string(), tenant: z.string().nullable(), role: z.string(), hasPassword: z.boolean(), createdAt: time(), ...etag });

export const accessRoutes: RouteDoc[] = [
  { method: 'post', path: '/v1/api-keys', tag: 'api keys', body: apiKeyCreateSchema, summary: 'create an API key; the answer holds the key (lbk_…), shown only this once', ok: { 201: key.safeExtend({ key: z.string() }) } },
  { method: 'get', path: '/v1/api-keys', tag: 'api keys', query: apiKeyListQuery, summary: 'API keys, never their secrets (hoster-admin: all or ?tenant=; tenant-admin: its tenant\'s)', ok: { 200: z.object({ keys: z.array(key), ...page }) } },
  { method: 'get', path: '/v1/api-keys/{id}', tag: 'api keys', params: { id }, summary: 'one API key', ok: { 200: key } },
  { method: 'delete', path: '/v1/api-keys/{id}', tag: 'api keys', params: { id }, ifMatch: true, summary: 'revoke an API key at once (again: the same answer)', ok: { 200: key } },
  { method: 'get', path: '/v1/users', tag: 'users', query: userListQuery, summary: 'the portal\'s local users', ok: { 200: z.object({ users: z.array(user), ...page }) } },
  { method: 'post', path: '/v1/users', tag: 'users', body: userCreateSchema, errors: [409], summary: 'create a portal user', ok: { 201: user } },
  { method: 'patch', path: '/v1/users/{username}', tag: 'users', body: userPatchSchema, ifMatch: true, summary: 'change the role; ends the user\'s portal sessions', ok: { 200: user } },
  { method: 'delete', path: '/v1/users/{username}', tag: 'users', ifMatch: true, summary: 'remove; ends the user\'s portal sessions', ok: { 200: z.object({ username: z.string(), removed: z.literal(true) }) } },
  { method: 'post', path: '/v1/users/{username}/reset-links', tag: 'users', body: resetSchema, summary: 'a one-time password reset link', ok: { 201: z.object({ username: z.string(), path: z.string(), expiresAt: time(), url: z.string() }) } },
  {
    method: 'get', path: '/v1/audit', tag: 'audit', query: auditQuery, summary: 'the audit log, newest first (tenant roles: their tenant only)',
    ok: {
      200: z.object({
        entries: z.array(z.object({
          id: z.union([z.string(), z.number()]), at: time(), actor: z.string(), actorKey: z.string().nullable(), actorRole: z.string().nullable(), actorTenant: z.string().nullable(),
          tenant: z.string().nullable(), action: z.string(), target: z.string(), source: z.string().nullable(), requestId: z.string().nullable(), result: z.string(),
        })),
        ...page,
      }),
    },
  },
];
