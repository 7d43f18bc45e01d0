/**
 * Key rotation without downtime (docs/security.md, "Rotating keys") against a running service on the
 * real PostgreSQL server, over real mutual TLS: the CA (an agent of the old CA authenticates during
 * the overlap, renews through the agent's own renewal into a new-CA certificate, and the old one is
 * refused after retirement), the signing key, the master key (an injected failure between steps loses
 * nothing, and the rotation resumes) and a tenant's replica key (objects sealed to either key open).
 */
import 'reflect-metadata';
import { X509Certificate } from 'node:crypto';
import { access, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStream, sealStream } from '../../shared/crypto/index.js';
import type { PublicJwk } from '../../shared/crypto/keys.js';
import { renewIfDue } from '../../agent/enroll/renew.js';
import { refreshReplicaKey } from '../../agent/enroll/replica-key.js';
import { AgentState } from '../../agent/state/store.js';
import type { IdentityFiles } from '../../agent/state/store.js';
import { StateVersion } from '../../agent/state/schema.js';
import { createSubscription } from '../../service/events/subscriptions.js';
import { openSecret } from '../../service/events/secrets.js';
import { listSubscriptions } from '../../service/catalog/webhooks.js';
import type { Queryable } from '../../service/catalog/db.js';
import { rotateMaster } from '../../service/keys/master.js';
import { MasterKeys, previousMasterKeyFile } from '../../service/trust/master.js';
import { replicaKeyRing } from '../../service/workers/merge-job.js';
import pino from 'pino';
import { openContext } from '../../service/context.js';
import { verifyApiToken } from '../../service/trust/tokens.js';
import { runBin, scratchDir } from '../helpers.js';
import type { TestEnv } from './helpers.js';
import { enrolledAgent, httpsJson, operator, testEnv, testService } from './helpers.js';

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let scratch: Awaited<ReturnType<typeof scratchDir>>;

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  scratch = await scratchDir('lifeboat-keys-');
});
afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
  await scratch?.remove();
});

async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of source) parts.push(Buffer.from(p));
  return Buffer.concat(parts);
}

async function auditActions(): Promise<{ action: string; target: string; result: string }[]> {
  const r = await operator<{ entries: { action: string; target: string; result: string }[] }>(svc, 'GET', '/v1/audit');
  return r.body.entries.filter((e) => e.action.startsWith('keys.'));
}

describe('keys rotate ca', () => {
  it('an old-CA agent authenticates during the overlap, renews into a new-CA certificate, and is refused after retirement', async () => {
    const agent = await enrolledAgent(svc, 'contoso', '*.contoso.com', 'hv01.contoso.com');
    const stays = await enrolledAgent(svc, 'contoso', '*.contoso.com', 'hv02.contoso.com'); // never renews
    const oldCa = svc.ctx.ca.certPem;
    const oldFingerprint = svc.ctx.ca.fingerprint;
    const rotated = await operator<{ previous: string; current: string; retireAfter: string }>(svc, 'POST', '/v1/keys/ca/rotations', { overlap: '7d' });
    expect(rotated.status).toBe(201);
    expect(rotated.body.previous).toBe(oldFingerprint);
    expect(rotated.body.current).toBe(svc.ctx.ca.fingerprint);
    expect(rotated.body.current).not.toBe(oldFingerprint);
    expect(await readFile(env.config.trust.caCertFile, 'utf8')).toBe(svc.ctx.ca.certPem);

    // Overlap: an agent that trusts only the old CA verifies the server (through the cross certificate)
    // and its old-CA certificate is accepted.
    const during = await httpsJson(`${svc.agentUrl}/v1/vms`, { caPem: oldCa, identity: agent });
    expect(during.status).toBe(200);

    // The agent's own renewal, from its state directory, as its engine runs it.
    const state = new AgentState(join(scratch.path, 'agent-ca'));
    const files: IdentityFiles = {
      keyPem: agent.keyPem, certPem: agent.certPem, caPem: oldCa, tenantKeyJwk: `${JSON.stringify(agent.replicaKey)}\n`,
      identity: {
        version: StateVersion, serviceUrl: svc.agentUrl, name: agent.serverName, tenant: 'contoso', caFingerprint: oldFingerprint,
        certNotAfter: new Date(new X509Certificate(agent.certPem).validTo).toISOString(), enrolledAt: new Date().toISOString(),
      },
    };
    await state.writeIdentity(files);
    const renewed = await renewIfDue(state, files, new Date(Date.now() + 25 * 86_400_000));
    expect(renewed).toBeDefined();
    const newCert = new X509Certificate(renewed!.certPem);
    expect(newCert.verify(new X509Certificate(svc.ctx.ca.certPem).publicKey)).toBe(true);
    expect(newCert.verify(new X509Certificate(oldCa).publicKey)).toBe(false);
    const kept = await state.readIdentity();
    expect(kept.caPem).toContain(svc.ctx.ca.certPem.trim());
    expect(kept.caPem).toContain(oldCa.trim());

    const listed = await operator<{ ca: { agentsNotRenewed: number; previous: { id: string; live: boolean }[] } }>(svc, 'GET', '/v1/keys');
    expect(listed.body.ca.agentsNotRenewed).toBe(1); // hv02
    expect(listed.body.ca.previous).toEqual([expect.objectContaining({ id: oldFingerprint, live: true })]);
    expect((await httpsJson(`${svc.agentUrl}/v1/vms`, { caPem: oldCa, identity: stays })).status).toBe(200);

    // Retirement waits for hv02 unless forced; then old-CA certificates are refused, the renewed one is not.
    const notYet = await operator<{ detail: string }>(svc, 'POST', '/v1/keys/ca/retirements', { id: oldFingerprint });
    expect(notYet.status).toBe(409);
    expect(notYet.body.detail).toMatch(/1 agent\(s\) have not renewed/);
    const retired = await operator(svc, 'POST', '/v1/keys/ca/retirements', { id: oldFingerprint, force: true });
    expect(retired.status).toBe(200);
    await expect(access(`${env.config.trust.caKeyFile}.previous`)).rejects.toThrow();
    for (const old of [stays, { keyPem: agent.keyPem, certPem: agent.certPem }]) {
      const refused = await httpsJson<{ error: { code: string } }>(`${svc.agentUrl}/v1/vms`, { caPem: kept.caPem, identity: old });
      expect(refused.status).toBe(401);
      expect(refused.body.error.code).toBe('unauthenticated');
    }
    const withNew = await httpsJson(`${svc.agentUrl}/v1/vms`, { caPem: kept.caPem, identity: { keyPem: kept.keyPem, certPem: kept.certPem } });
    expect(withNew.status).toBe(200);
    // The endpoint's own certificate is the new CA's now: an agent trusting only the old CA is refused by TLS.
    await expect(httpsJson(`${svc.agentUrl}/v1/ca`, { caPem: oldCa })).rejects.toThrow();
    expect((await auditActions()).map((a) => `${a.action} ${a.result}`)).toEqual(expect.arrayContaining(['keys.rotate ok', 'keys.retire ok']));
  });
});

describe('keys rotate signing', () => {
  it('tokens of the old key verify until it is retired; new tokens carry the new kid', async () => {
    const oldAdmin = (await readFile(env.config.adminTokenFile, 'utf8')).trim();
    const oldKid = svc.ctx.signer.kid;
    const rotated = await operator<{ previous: string; current: string }>(svc, 'POST', '/v1/keys/signing/rotations', { overlap: '1d' });
    expect(rotated.status).toBe(201);
    expect(rotated.body.previous).toBe(oldKid);
    expect(rotated.body.current).not.toBe(oldKid);
    const newAdmin = (await readFile(env.config.adminTokenFile, 'utf8')).trim();
    expect(newAdmin).not.toBe(oldAdmin);
    expect(JSON.parse(Buffer.from(newAdmin.split('.')[0]!, 'base64url').toString()).kid).toBe(rotated.body.current);
    // Both verify during the overlap, and a token the service makes now is signed with the new key.
    expect((await operator(svc, 'GET', '/v1/tenants', undefined, oldAdmin)).status).toBe(200);
    expect((await operator(svc, 'GET', '/v1/tenants', undefined, newAdmin)).status).toBe(200);
    const made = await operator<{ token: string }>(svc, 'POST', '/v1/tenants/contoso/tokens', {}, oldAdmin);
    expect(JSON.parse(Buffer.from(made.body.token.split('.')[0]!, 'base64url').toString()).kid).toBe(rotated.body.current);
    const retired = await operator(svc, 'POST', '/v1/keys/signing/retirements', { id: oldKid });
    expect(retired.status).toBe(200);
    const refused = await operator<{ detail: string }>(svc, 'GET', '/v1/tenants', undefined, oldAdmin);
    expect(refused.status).toBe(401);
    expect(refused.body.detail).toMatch(/not valid|does not accept/);
    expect((await operator(svc, 'GET', '/v1/tenants', undefined, newAdmin)).status).toBe(200);
  });

  it('refuses a retirement of a key it does not have and a kind it does not know, with one line', async () => {
    const unknown = await operator<{ status: number; detail: string }>(svc, 'POST', '/v1/keys/signing/retirements', { id: 'nope' });
    expect(unknown.status).toBe(404);
    const kind = await operator<{ detail: string }>(svc, 'POST', '/v1/keys/dns/rotations', {});
    expect(kind.status).toBe(400);
    const stray = await operator<{ detail: string }>(svc, 'POST', '/v1/keys/ca/rotations', { tenant: 'contoso' });
    expect(stray.status).toBe(400);
    expect(stray.body.detail).toBe('tenant does not apply to ca keys');
  });
});

describe('keys rotate master', () => {
  it('re-wraps every tenant key and webhook secret; a failure between steps loses nothing and the rotation resumes', async () => {
    await operator(svc, 'POST', '/v1/tenants', { name: 'fabrikam' });
    const { secret } = await createSubscription(svc.ctx.db, svc.ctx.masterKey, { tenant: 'fabrikam', url: 'https://hooks.example.com/x', types: ['*'], createdBy: 'test' });
    const before = await replicaKeyRing(svc.ctx, 'fabrikam');
    const oldId = svc.ctx.master.currentId;

    // Killed after the new key file is written and before the catalog is re-wrapped.
    const inTx = <T>(fn: (tx: Queryable) => Promise<T>) => svc.ctx.db.transaction(fn);
    await expect(rotateMaster(svc.ctx, inTx, async (step) => {
      if (step === 'current-written') throw new Error('injected: killed between steps');
    })).rejects.toThrow('injected');
    // A fresh process reading the files opens everything still (the previous key is kept).
    const fresh = await MasterKeys.load(env.config.trust.masterKeyFile);
    expect(fresh.previousId).toBe(oldId);
    expect(fresh.currentId).not.toBe(oldId);
    const t = (await svc.ctx.db.query<{ w: string }>("SELECT replica_private_wrapped AS w FROM tenants WHERE name = 'fabrikam'"))[0]!.w;
    expect(MasterKeys.wrappedWith(t)).not.toBe(fresh.currentId);
    expect(JSON.parse(Buffer.from(await fresh.unwrap(t, 'test')).toString()).d).toBe(before[0]!.d);

    // A failure inside the re-wrap's transaction rolls all of it back.
    await expect(rotateMaster(svc.ctx, inTx, async (step) => {
      if (step === 'rewrapped') throw new Error('injected: failed before commit');
    })).rejects.toThrow('injected');
    const still = (await svc.ctx.db.query<{ w: string }>("SELECT replica_private_wrapped AS w FROM tenants WHERE name = 'fabrikam'"))[0]!.w;
    expect(still).toBe(t);

    // Run again through the API: it resumes with the same new key.
    const resumed = await operator<{ current: string; resumed: boolean; rewrapped: { tenantKeys: number; webhookSecrets: number } }>(svc, 'POST', '/v1/keys/master/rotations', {});
    expect(resumed.status).toBe(201);
    expect(resumed.body).toMatchObject({ current: fresh.currentId, resumed: true });
    expect(resumed.body.rewrapped.tenantKeys).toBeGreaterThanOrEqual(2); // contoso and fabrikam
    expect(resumed.body.rewrapped.webhookSecrets).toBe(1);
    // Another rotation before retiring is refused.
    expect((await operator(svc, 'POST', '/v1/keys/master/rotations', {})).status).toBe(409);

    const retired = await operator(svc, 'POST', '/v1/keys/master/retirements', {});
    expect(retired.status).toBe(200);
    await expect(access(previousMasterKeyFile(env.config.trust.masterKeyFile))).rejects.toThrow();
    const only = await MasterKeys.load(env.config.trust.masterKeyFile);
    expect(only.all()).toHaveLength(1);
    const after = await replicaKeyRing(svc.ctx, 'fabrikam');
    expect(after[0]!.d).toBe(before[0]!.d);
    const [sub] = await listSubscriptions(svc.ctx.db, 'fabrikam');
    expect(openSecret(only.current, sub!.id, sub!.secretSealed)).toBe(secret);
    expect(() => openSecret(fresh.previous!, sub!.id, sub!.secretSealed)).toThrow();
    expect((await operator(svc, 'POST', '/v1/keys/master/retirements', {})).status).toBe(404);
  });
});

describe('keys rotate tenant', () => {
  it('new objects are sealed to the new key the agent learns at its next pass; old ones open until the key is retired', async () => {
    const agent = await enrolledAgent(svc, 'northwind', '*.northwind.com', 'hv01.northwind.com');
    const state = new AgentState(join(scratch.path, 'agent-tenant'));
    const files: IdentityFiles = {
      keyPem: agent.keyPem, certPem: agent.certPem, caPem: svc.ctx.ca.certPem, tenantKeyJwk: `${JSON.stringify(agent.replicaKey)}\n`,
      identity: {
        version: StateVersion, serviceUrl: svc.agentUrl, name: agent.serverName, tenant: 'northwind', caFingerprint: svc.ctx.ca.fingerprint,
        certNotAfter: new Date(new X509Certificate(agent.certPem).validTo).toISOString(), enrolledAt: new Date().toISOString(),
      },
    };
    await state.writeIdentity(files);
    const plain = Buffer.alloc(200_000, 7);
    const sealTo = (key: PublicJwk) => collect(sealStream([plain], { recipient: key, context: Buffer.from('test') }));
    const old = await sealTo(agent.replicaKey);

    const rotated = await operator<{ previous: string; current: string }>(svc, 'POST', '/v1/keys/tenant/rotations', { tenant: 'northwind' });
    expect(rotated.status).toBe(201);
    expect(rotated.body.previous).toBe(agent.replicaKey.kid);
    const learned = await refreshReplicaKey(state, files);
    const newKey = JSON.parse(learned.tenantKeyJwk) as PublicJwk;
    expect(newKey.kid).toBe(rotated.body.current);
    expect(JSON.parse((await state.readIdentity()).tenantKeyJwk).kid).toBe(rotated.body.current);
    const next = await sealTo(newKey);

    const ring = await replicaKeyRing(svc.ctx, 'northwind');
    expect(ring.map((k) => k.kid)).toEqual([rotated.body.current, agent.replicaKey.kid]);
    for (const sealed of [old, next]) expect(await collect((await openStream([sealed], { key: ring })).plaintext)).toEqual(plain);
    // The new object names its key and does not open with the old one alone.
    await expect(openStream([next], { key: ring[1]! })).rejects.toThrow(/unwrap/);

    expect((await operator(svc, 'POST', '/v1/keys/tenant/retirements', { tenant: 'northwind', id: agent.replicaKey.kid })).status).toBe(200);
    const left = await replicaKeyRing(svc.ctx, 'northwind');
    expect(left.map((k) => k.kid)).toEqual([rotated.body.current]);
    await expect(openStream([old], { key: left })).rejects.toThrow(/unwrap/);
    expect(await collect((await openStream([next], { key: left })).plaintext)).toEqual(plain);
    const audit = await auditActions();
    expect(audit.filter((a) => a.target.startsWith('tenant northwind')).map((a) => `${a.action} ${a.result}`)).toEqual(['keys.retire ok', 'keys.rotate ok']);
  });

  it('another tenant\'s credentials cannot rotate or list keys', async () => {
    const created = await operator<{ key: string }>(svc, 'POST', '/v1/api-keys', { name: 'nw', role: 'tenant-admin', tenant: 'northwind' });
    const tenantAdmin = created.body.key;
    expect((await operator(svc, 'POST', '/v1/keys/tenant/rotations', { tenant: 'contoso' }, tenantAdmin)).status).toBe(403);
    expect((await operator(svc, 'POST', '/v1/keys/tenant/rotations', { tenant: 'northwind' }, tenantAdmin)).status).toBe(403);
    expect((await operator(svc, 'GET', '/v1/keys', undefined, tenantAdmin)).status).toBe(403);
  });
});

describe('lifeboat-service keys', () => {
  it('rotates through the running service, and says a mistake in one line with a non-zero exit', async () => {
    const file = JSON.parse(await readFile(env.config.path, 'utf8')) as { api: { port: number } };
    file.api.port = Number(new URL(svc.apiUrl).port);
    const config = join(dirname(env.config.path), 'cli.json');
    await writeFile(config, JSON.stringify(file));
    const cli = (...args: string[]) => runBin('service', [...args, '--config', config]);

    expect((await operator(svc, 'POST', '/v1/tenants', { name: 'litware' })).status).toBe(201);
    const ok = await cli('keys', 'rotate', 'tenant', '--tenant', 'litware');
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^rotated the tenant litware replica key: \S+ -> \S+; logs sealed to \S+ still merge until: lifeboat-service keys retire tenant --tenant litware --old \S+\n$/);
    for (const [args, says] of [
      [['keys', 'rotate', 'dns'], 'unknown key kind "dns": give ca, signing, master or tenant'],
      [['keys', 'rotate', 'tenant'], 'keys … tenant needs --tenant NAME'],
      [['keys', 'retire', 'signing'], 'keys retire signing needs --old ID (lifeboat-service keys list shows it)'],
      [['keys', 'rotate', 'tenant', '--tenant', 'nobody'], 'no tenant nobody'],
    ] as const) {
      const r = await cli(...args);
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stderr).toContain(says);
    }
  });
});

describe('another process on the same data directory and catalog', () => {
  it('accepts tokens of a signing key and opens keys wrapped under a master key rotated by the serving process', async () => {
    const other = await openContext(env.config, { log: pino({ level: 'silent' }) });
    try {
      await operator(svc, 'POST', '/v1/tenants', { name: 'adatum' });
      const signing = await operator<{ current: string }>(svc, 'POST', '/v1/keys/signing/rotations', {});
      expect(signing.status).toBe(201);
      expect(other.signer.kid).not.toBe(signing.body.current);
      const token = (await readFile(env.config.adminTokenFile, 'utf8')).trim();
      expect(await verifyApiToken(other.signer, token)).toMatchObject({ role: 'hoster-admin' });
      expect(other.signer.kid).toBe(signing.body.current);

      const master = await operator<{ current: string }>(svc, 'POST', '/v1/keys/master/rotations', {});
      expect(master.status).toBe(201);
      const ring = await replicaKeyRing(other, 'adatum');
      expect(ring[0]!.d).toBe((await replicaKeyRing(svc.ctx, 'adatum'))[0]!.d);
      expect(other.master.currentId).toBe(master.body.current);
      expect((await operator(svc, 'POST', '/v1/keys/master/retirements', {})).status).toBe(200);
    } finally {
      await other.close();
    }
  });
});
