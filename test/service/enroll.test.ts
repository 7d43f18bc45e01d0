/** Enrollment, renewal and revocation against the real PostgreSQL server, over real mutual TLS. */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as x509 from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pinServiceCa } from '../../agent/enroll/enroll.js';
import { newSigningJwk, loadSigner, signEnrollToken } from '../../service/trust/tokens.js';
import type { TestEnv } from './helpers.js';
import { enrolledAgent, httpsJson, newKeyAndCsr, operator, testEnv, testService } from './helpers.js';

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let caPem: string;

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  caPem = svc.ctx.ca.certPem;
  await operator(svc, 'POST', '/v1/tenants', { name: 'contoso' });
  await operator(svc, 'POST', '/v1/tenants/contoso/authorizations', { pattern: '*.Contoso.com' });
});
afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

async function token(tenant = 'contoso', ttl?: string): Promise<string> {
  const r = await operator<{ token: string }>(svc, 'POST', `/v1/tenants/${tenant}/tokens`, ttl ? { ttl } : {});
  expect(r.status).toBe(201);
  return r.body.token;
}

async function enroll(tok: string, serverName: string) {
  const { keyPem, csrPem } = await newKeyAndCsr();
  const res = await httpsJson<Record<string, unknown> & { error?: { code: string; reason?: string } }>(`${svc.agentUrl}/v1/enroll`, { method: 'POST', body: { token: tok, serverName, csr: csrPem }, caPem });
  return { res, keyPem };
}

describe('enrollment', () => {
  it('issues a certificate for a name the tenant allows, signed by the CA, SAN = the name', async () => {
    const { res } = await enroll(await token(), 'HV01.contoso.com');
    expect(res.status).toBe(200);
    const body = res.body as { certificate: string; caChain: string[]; tenant: string; serverName: string; notAfter: string; renewAfter: string; tenantReplicaKey: { kty: string } };
    expect(body.tenant).toBe('contoso');
    expect(body.serverName).toBe('hv01.contoso.com');
    expect(body.caChain).toEqual([caPem]);
    expect(body.tenantReplicaKey.kty).toBe('OKP');
    const cert = new x509.X509Certificate(body.certificate);
    const san = cert.getExtension(x509.SubjectAlternativeNameExtension)!;
    expect(san.names.items.map((n) => n.value)).toEqual(['hv01.contoso.com']);
    expect(await cert.verify({ publicKey: new x509.X509Certificate(caPem).publicKey, signatureOnly: true })).toBe(true);
    const life = Date.parse(body.notAfter) - cert.notBefore.getTime();
    expect(Date.parse(body.renewAfter) - cert.notBefore.getTime()).toBeCloseTo(life * 2 / 3, -4);
  });

  it('refuses a reused token, and exactly one of two concurrent uses succeeds', async () => {
    const tok = await token();
    expect((await enroll(tok, 'a.contoso.com')).res.status).toBe(200);
    const again = await enroll(tok, 'b.contoso.com');
    expect(again.res.status).toBe(401);
    expect(again.res.body.error).toMatchObject({ code: 'unauthenticated', reason: 'token_used' });
    const tok2 = await token();
    const both = await Promise.all([enroll(tok2, 'c.contoso.com'), enroll(tok2, 'd.contoso.com')]);
    expect(both.map((b) => b.res.status).sort()).toEqual([200, 401]);
  });

  it('refuses an expired token', async () => {
    const expired = await signEnrollToken(svc.ctx.signer, { tenant: 'contoso', caFingerprint: svc.ctx.ca.fingerprint, endpoint: svc.agentUrl, ttlSeconds: -60 });
    const { res } = await enroll(expired, 'e.contoso.com');
    expect(res.status).toBe(401);
    expect(res.body.error).toMatchObject({ reason: 'token_expired' });
  });

  it('refuses a forged token (another signing key) and an altered one', async () => {
    const forger = await loadSigner(await newSigningJwk());
    const forged = await signEnrollToken(forger, { tenant: 'contoso', caFingerprint: svc.ctx.ca.fingerprint, endpoint: svc.agentUrl, ttlSeconds: 600 });
    expect((await enroll(forged, 'f.contoso.com')).res.body.error).toMatchObject({ code: 'unauthenticated', reason: 'token_invalid' });
    const [h, p, s] = (await token()).split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
    const altered = `${h}.${Buffer.from(JSON.stringify({ ...claims, tenant: 'fabrikam' })).toString('base64url')}.${s}`;
    const r = await enroll(altered, 'g.contoso.com');
    expect(r.res.status).toBe(401);
    expect(r.res.body.error).toMatchObject({ reason: 'token_invalid' });
  });

  it('refuses names outside the tenant\'s patterns, without using up the token', async () => {
    const tok = await token();
    const outside = await enroll(tok, 'hv01.fabrikam.com');
    expect(outside.res.status).toBe(403);
    expect(outside.res.body.error).toMatchObject({ code: 'forbidden', reason: 'name_not_authorized' });
    expect((await enroll(tok, 'contoso.com')).res.status).toBe(403);
    expect((await enroll(tok, 'h.contoso.com')).res.status).toBe(200);
  });

  it('refuses malformed input with a 4xx and a clear message', async () => {
    const tok = await token();
    const bad = await enroll(tok, 'not a name');
    expect(bad.res.status).toBe(400);
    expect(String((bad.res.body.error as unknown as { message: string }).message)).toMatch(/not a DNS name/);
    const noCsr = await httpsJson<{ error: { message: string } }>(`${svc.agentUrl}/v1/enroll`, { method: 'POST', body: { token: tok, serverName: 'i.contoso.com', csr: 'nonsense' }, caPem });
    expect(noCsr.status).toBe(400);
    expect(noCsr.body.error.message).toMatch(/csr/);
    const extra = await httpsJson<{ error: { message: string } }>(`${svc.agentUrl}/v1/enroll`, { method: 'POST', body: { token: tok, serverName: 'i.contoso.com', csr: 'x', tenant: 'other' }, caPem });
    expect(extra.status).toBe(400);
    const notJson = await httpsJson(`${svc.agentUrl}/v1/enroll`, { method: 'POST', rawBody: '{', caPem });
    expect(notJson.status).toBe(400);
    const huge = await httpsJson(`${svc.agentUrl}/v1/enroll`, { method: 'POST', rawBody: JSON.stringify({ token: 'x'.repeat(100_000) }), caPem });
    expect(huge.status).toBe(413);
  });
});

describe('key types and endpoints', () => {
  async function rsaCsr(bits: number): Promise<string> {
    const alg = { name: 'RSASSA-PKCS1-v1_5', modulusLength: bits, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' };
    const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']) as webcrypto.CryptoKeyPair;
    return (await x509.Pkcs10CertificateRequestGenerator.create({ name: 'CN=agent', keys, signingAlgorithm: alg })).toString('pem');
  }

  it('refuses an RSA key shorter than 2048 bits (protocol §3.1) without using up the token, and takes RSA-2048', async () => {
    const tok = await token();
    const weak = await httpsJson<{ error: { code: string; message: string } }>(`${svc.agentUrl}/v1/enroll`, { method: 'POST', body: { token: tok, serverName: 'rsa.contoso.com', csr: await rsaCsr(1024) }, caPem });
    expect(weak.status).toBe(400);
    expect(weak.body.error.message).toMatch(/RSA of 1024 bits; RSA must have 2048 to 4096 bits/);
    const ok = await httpsJson(`${svc.agentUrl}/v1/enroll`, { method: 'POST', body: { token: tok, serverName: 'rsa.contoso.com', csr: await rsaCsr(2048) }, caPem });
    expect(ok.status).toBe(200);
  });

  it('the agent says a plain-HTTP port answered without TLS, in one line without OpenSSL text', async () => {
    const server = createServer((_q, r) => r.end('hello'));
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    const { port } = server.address() as AddressInfo;
    try {
      const err = await pinServiceCa(`https://127.0.0.1:${port}`, '0'.repeat(64)).then(() => undefined, (e: unknown) => e as Error);
      expect(err?.message).toBe(`service https://127.0.0.1:${port} answered, but not with TLS (plain HTTP?): give the agent endpoint's https port`);
    } finally {
      server.close();
    }
  });
});

describe('client certificates', () => {
  it('renews over mutual TLS; revocation takes effect on the next request', async () => {
    const agent = await enrolledAgent(svc, 'contoso', '*.contoso.com', 'hv09.contoso.com');
    expect((await httpsJson(`${svc.agentUrl}/v1/vms`, { caPem, identity: agent })).status).toBe(200);
    const { keyPem, csrPem } = await newKeyAndCsr();
    const renewed = await httpsJson<{ certificate: string; serverName: string }>(`${svc.agentUrl}/v1/renew`, { method: 'POST', body: { csr: csrPem }, caPem, identity: agent });
    expect(renewed.status).toBe(200);
    expect(renewed.body.serverName).toBe('hv09.contoso.com');
    const second = { keyPem, certPem: renewed.body.certificate };
    expect((await httpsJson(`${svc.agentUrl}/v1/vms`, { caPem, identity: second })).status).toBe(200);

    const r = await operator<{ revokedCertificates: number }>(svc, 'POST', '/v1/tenants/contoso/revocations', { server: 'HV09.contoso.com' });
    expect(r.body.revokedCertificates).toBe(2);
    for (const id of [agent, second]) {
      const after = await httpsJson<{ error: { reason: string } }>(`${svc.agentUrl}/v1/vms`, { caPem, identity: id });
      expect(after.status).toBe(401);
      expect(after.body.error.reason).toBe('certificate_revoked');
    }
  });

  it('refuses requests without a certificate and with one from another CA', async () => {
    const none = await httpsJson<{ error: { reason: string } }>(`${svc.agentUrl}/v1/vms`, { caPem });
    expect(none.status).toBe(401);
    const { createCa, loadCa, issueClientCert, parseCsr } = await import('../../service/trust/ca.js');
    const other = await createCa('rogue');
    const rogue = await loadCa(other.keyPem, other.certPem);
    const { keyPem, csrPem } = await newKeyAndCsr();
    const cert = await issueClientCert(rogue, await parseCsr(csrPem), 'hv01.contoso.com', 30);
    const res = await httpsJson<{ error: { reason: string } }>(`${svc.agentUrl}/v1/vms`, { caPem, identity: { keyPem, certPem: cert.pem } });
    expect(res.status).toBe(401);
    expect(res.body.error.reason).toBe('certificate_required');
  });
});
