/**
 * Enrollment (protocol §1.1, §3.1): pin the service CA by the token's fingerprint, send a CSR with the
 * token, keep the certificate, key, CA chain and the tenant's replica key in the state directory.
 * Nothing is written unless the service issued a certificate.
 */
import { LifeboatError, userMessage } from '../../shared/errors.js';
import { caResponseSchema, enrollResponseSchema } from '../../shared/protocol/schemas.js';
import { StateVersion } from '../state/schema.js';
import { takeRunLock } from '../state/lock.js';
import type { AgentState } from '../state/store.js';
import { send, sendParsed } from '../transport/http-client.js';
import { certificateFingerprint, certificateNotAfter, makeKeyAndCsr } from './csr.js';
import { readEnrollmentToken } from './token.js';
import { registerNewEnvelopeKey } from '../reverse/keys.js';

export interface EnrollOptions {
  serviceUrl: string;
  token: string;
  serverName: string;
  /**
   * Replace an existing identity. Every protected VM then starts over with a base of a new generation
   * (the old identity's spooled logs are sealed to another tenant's key, and its service may differ).
   */
  force?: boolean;
}

/**
 * Refuses to enroll over an existing identity unless forced (a silent replacement breaks the replicas'
 * continuity); returns whether one is being replaced.
 */
async function checkNotEnrolled(state: AgentState, force: boolean): Promise<boolean> {
  if (!(await state.hasIdentity())) return false;
  if (force) return true;
  const { identity } = await state.readIdentity();
  throw new LifeboatError('conflict', `this agent is already enrolled as ${identity.name} with tenant ${identity.tenant} at ${identity.serviceUrl} (state in ${state.dir}); `
    + 'to replace that identity, which starts every protected VM over with a new base, run enroll again with --force');
}

/** Fetches the CA without trusting the connection, then trusts it only if its fingerprint matches. */
export async function pinServiceCa(serviceUrl: string, fingerprint: string): Promise<string> {
  const res = await send({ method: 'GET', url: new URL('/v1/ca', serviceUrl).toString(), tls: { insecure: true } }).catch((err: unknown) => {
    throw notTls(serviceUrl, err) ?? err;
  });
  let body: unknown;
  try {
    body = JSON.parse(res.body.toString('utf8'));
  } catch {
    body = undefined;
  }
  const pem = caResponseSchema.safeParse(body).data?.certificate;
  if (res.status !== 200 || pem === undefined) throw new LifeboatError('unavailable', `service ${new URL(serviceUrl).origin} did not return its CA (HTTP ${res.status}): is this a lifeboat agent endpoint?`);
  let actual: string;
  try {
    actual = certificateFingerprint(pem);
  } catch (err) {
    throw new LifeboatError('corrupt', `service ${new URL(serviceUrl).origin} returned a CA that is not a certificate`, { cause: err });
  }
  if (actual !== fingerprint) throw new LifeboatError('unauthenticated', `service ${new URL(serviceUrl).origin} is not the service that issued this token (CA fingerprint ${actual.slice(0, 16)}… differs from the token's ${fingerprint.slice(0, 16)}…)`);
  return pem;
}

/** A port that answered but not in TLS (plain HTTP, another protocol): said so, without OpenSSL's text. */
function notTls(serviceUrl: string, err: unknown): LifeboatError | undefined {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG' || code === 'EPROTO' || /^ERR_SSL_.*(RECORD|VERSION|PACKET)/.test(code)) {
      return new LifeboatError('unavailable', `service ${new URL(serviceUrl).origin} answered, but not with TLS (plain HTTP?): give the agent endpoint's https port`, { cause: err });
    }
  }
  return undefined;
}

export async function enroll(state: AgentState, options: EnrollOptions): Promise<{ tenant: string; serverName: string; notAfter: string; envelopeKey: string }> {
  const claims = readEnrollmentToken(options.token);
  const replacing = await checkNotEnrolled(state, options.force === true);
  // While an identity and the VMs' progress are replaced, no engine may run on this state directory
  // (taken before the token is used, so a refusal does not waste it).
  const release = replacing ? await takeRunLock(state.dir) : async () => {};
  try {
    const serviceUrl = options.serviceUrl;
    const caPem = await pinServiceCa(serviceUrl, claims.caFingerprint);
    const { keyPem, csrPem } = await makeKeyAndCsr(options.serverName);
    const res = await sendParsed(enrollResponseSchema, {
      method: 'POST', url: new URL('/v1/enroll', serviceUrl).toString(), tls: { ca: caPem },
      json: { token: options.token.trim(), serverName: options.serverName, csr: csrPem },
    });
    await state.writeIdentity({
      keyPem,
      certPem: res.certificate,
      caPem: [caPem, ...res.caChain.filter((c) => c.trim() !== caPem.trim())].join(''),
      tenantKeyJwk: `${JSON.stringify(res.tenantReplicaKey)}\n`,
      identity: {
        version: StateVersion, serviceUrl, name: res.serverName, tenant: res.tenant, caFingerprint: claims.caFingerprint,
        certNotAfter: certificateNotAfter(res.certificate), enrolledAt: new Date().toISOString(),
      },
    });
    // Every VM starts over, so none ships under the old identity's generations or key.
    if (replacing) for (const vm of await state.listVms()) await state.restartVm(vm);
    // The envelope key reverse logs are sealed to (protocol §14); registered again at each renewal.
    const envelopeKey = await registerNewEnvelopeKey(state.dir, await state.readIdentity()).then((r) => r.kid, (err: unknown) => `not registered (${userMessage(err) ?? String(err)}; run: lifeboat-agent envelope-key register)`);
    return { tenant: res.tenant, serverName: res.serverName, notAfter: res.notAfter, envelopeKey };
  } finally {
    await release();
  }
}
