/**
 * The operator API's OpenAPI 3.1 document, generated from the route registry in spec/: the zod
 * schemas the routes check requests with, and the schemas of their answers, which
 * test/api/openapi.test.ts holds every route's real answers to.
 */
import { accessRoutes } from './spec/access.js';
import { failbackRoutes } from './spec/failbacks.js';
import { failoverRoutes } from './spec/failovers.js';
import { keyRoutes } from './spec/keys.js';
import { networkRoutes } from './spec/networks.js';
import { planRoutes } from './spec/plans.js';
import { publicIpRoutes } from './spec/public-ips.js';
import type { RouteDoc } from './spec/registry.js';
import { buildDocument } from './spec/registry.js';
import { tenantRoutes } from './spec/tenants.js';
import { usageRoutes } from './spec/usage.js';
import { webhookRoutes } from './spec/webhooks.js';

export const apiRoutes: readonly RouteDoc[] = [
  ...tenantRoutes, ...failoverRoutes, ...failbackRoutes, ...networkRoutes, ...publicIpRoutes, ...planRoutes, ...webhookRoutes, ...usageRoutes, ...accessRoutes, ...keyRoutes,
];

export const openApiDocument = buildDocument(apiRoutes);
