/**
 * Enrollment and renewal of agents' certificates (agent protocol §3). Enrollment checks the CSR, the
 * token (signature, audience, expiry), the tenant, the server name against the tenant's patterns,
 * and records the token's jti and the new certificate in one transaction, so a token is good once.
 */
import type { JWK } from 'jose';
import type { Queryable } from '../catalog/db.js';
import { getTenant, listAuthorizations } from '../catalog/tenants.js';
import type { ServerCertRow } from '../catalog/servers.js';
import { insertServerCert, useEnrollmentToken } from '../catalog/servers.js';
import type { ServiceContext } from '../context.js';
import { ErrForbidden, ErrUnauthenticated } from '../errors.js';
import type { AuthorizationRow } from '../catalog/tenants.js';
import { issueClientCert, parseCsr } from './ca.js';
import { bestMatch, normalizeServerName } from './patterns.js';
import { verifyEnrollToken } from './tokens.js';
import type { PreviousCa } from '../context.js';

/** The previous CAs still in their overlap now. */
export function liveCas(ctx: ServiceContext, now = new Date()): PreviousCa[] {
  return ctx.previousCas.filter((p) => p.until > now && p.id !== ctx.ca.fingerprint);
}

export interface EnrollResponse {
  certificate: string;
  caChain: string[];
  tenant: string;
  serverName: string;
  serial: string;
  notAfter: string;
  renewAfter: string;
  tenantReplicaKey: JWK;
}

/** The tenant's authorization entry that governs serverName, or 403 name_not_authorized. */
export async function authorizationFor(db: Queryable, tenant: string, serverName: string): Promise<AuthorizationRow> {
  const entry = bestMatch(await listAuthorizations(db, tenant), serverName);
  if (!entry) throw ErrForbidden('name_not_authorized', `server ${serverName} matches no authorization entry of tenant ${tenant} (lifeboat-service tenant allow ${tenant} --server PATTERN)`);
  return entry;
}

export async function enroll(ctx: ServiceContext, body: { token: string; serverName: string; csr: string }): Promise<EnrollResponse> {
  const csr = await parseCsr(body.csr);
  const serverName = normalizeServerName(body.serverName);
  const claims = await verifyEnrollToken(ctx.signer, body.token);
  if (claims.caFingerprint !== ctx.ca.fingerprint) throw ErrUnauthenticated('token_invalid', 'enrollment token names another CA');
  return ctx.db.transaction(async (tx) => {
    const tenant = await getTenant(tx, claims.tenant);
    if (!tenant) throw ErrUnauthenticated('token_invalid', `enrollment token names tenant ${claims.tenant}, which does not exist`);
    await authorizationFor(tx, tenant.name, serverName);
    await useEnrollmentToken(tx, claims.jti, tenant.name, serverName);
    return issueAndRecord(ctx, tx, csr, tenant.name, serverName, tenant.replicaPublicJwk);
  });
}

/** A new certificate for the same server and tenant as the presenting one (already verified live). */
export async function renew(ctx: ServiceContext, presenting: ServerCertRow, csrPem: string): Promise<EnrollResponse> {
  const csr = await parseCsr(csrPem);
  return ctx.db.transaction(async (tx) => {
    const tenant = await getTenant(tx, presenting.tenant);
    if (!tenant) throw ErrUnauthenticated('certificate_unknown', 'tenant of this certificate no longer exists');
    await authorizationFor(tx, tenant.name, presenting.fqdn);
    return issueAndRecord(ctx, tx, csr, tenant.name, presenting.fqdn, tenant.replicaPublicJwk);
  });
}

async function issueAndRecord(ctx: ServiceContext, tx: Queryable, csr: Awaited<ReturnType<typeof parseCsr>>, tenant: string, serverName: string, replicaKey: JWK): Promise<EnrollResponse> {
  const cert = await issueClientCert(ctx.ca, csr, serverName, ctx.config.trust.certValidityDays);
  await insertServerCert(tx, { serial: cert.serial, tenant, fqdn: serverName, notBefore: cert.notBefore, notAfter: cert.notAfter, caId: ctx.ca.fingerprint });
  const span = cert.notAfter.getTime() - cert.notBefore.getTime();
  return {
    certificate: cert.pem,
    // The issuing CA, then any previous CA still in its overlap (the agent trusts each, docs/security.md).
    caChain: [ctx.ca.certPem, ...liveCas(ctx).map((p) => p.certPem)],
    tenant,
    serverName,
    serial: cert.serial,
    notAfter: cert.notAfter.toISOString(),
    renewAfter: new Date(cert.notBefore.getTime() + Math.floor(span * 2 / 3)).toISOString(),
    tenantReplicaKey: replicaKey,
  };
}
