/**
 * The service's signed tokens, all JWTs (jose, ES256) with the one signing key made at init, told
 * apart by audience: enrollment tokens (one-time, jti recorded at use), operator API tokens (role
 * claim) and upload grants (one object key, one method, a size bound). Tenants' replica private keys
 * are kept wrapped under the master key (JWE, dir + A256GCM).
 */
import { randomUUID } from 'node:crypto';
import type { webcrypto } from 'node:crypto';
import { calculateJwkThumbprint, decodeProtectedHeader, errors as joseErrors, exportJWK, generateKeyPair, importJWK, jwtVerify, SignJWT } from 'jose';
import { checkJwk, generateKeyPair as generateRecipientKeyPair } from '../../shared/crypto/keys.js';
import type { PrivateJwk, PublicJwk } from '../../shared/crypto/keys.js';
import type { JWK, JWTPayload } from 'jose';
import { ErrUnauthenticated } from '../errors.js';
import { MaxTokenLength } from '../../shared/protocol/schemas.js';
import type { Principal } from './roles.js';
import { isHosterRole, isRole } from './roles.js';
import type { MasterKeys } from './master.js';

export const AudEnroll = 'lifeboat-enroll';
export const AudApi = 'lifeboat-api';
export const AudUpload = 'lifeboat-upload';
export const Issuer = 'lifeboat-service';

type CryptoKey = webcrypto.CryptoKey;

export type { Role } from './roles.js';

/** A signing key that was replaced: tokens it signed still verify until `until` (docs/security.md). */
export interface PreviousVerifier {
  kid: string;
  publicKey: CryptoKey;
  until: Date;
}

export interface Signer {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** RFC 7638 thumbprint of the public key, in every token's header. */
  kid: string;
  /** Replaced keys still in their overlap (read from the catalog; the rotation sets them). */
  previous: PreviousVerifier[];
  /** Reads the current key and the previous ones again (another process rotated); rate-limited by the caller. */
  refresh?: () => Promise<void>;
}

/** A new ES256 signing key as a private JWK, for init. */
export async function newSigningJwk(): Promise<JWK> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  return { ...(await exportJWK(privateKey)), alg: 'ES256' };
}

/** The public half of a signing JWK and its kid. */
export async function signingPublicJwk(jwk: JWK): Promise<{ kid: string; publicJwk: JWK }> {
  const { kty, crv, x, y } = jwk;
  const publicJwk: JWK = { kty, crv, x, y, alg: 'ES256' };
  return { kid: await calculateJwkThumbprint({ kty, crv, x, y } as JWK), publicJwk };
}

export async function loadSigner(jwk: JWK, previous: PreviousVerifier[] = []): Promise<Signer> {
  const privateKey = await importJWK(jwk, 'ES256') as CryptoKey;
  const { kid, publicJwk } = await signingPublicJwk(jwk);
  const publicKey = await importJWK(publicJwk, 'ES256') as CryptoKey;
  return { privateKey, publicKey, kid, previous };
}

/** A previous signing key's verifier from its public JWK. */
export async function previousVerifier(kid: string, publicJwk: JWK, until: Date): Promise<PreviousVerifier> {
  return { kid, publicKey: await importJWK(publicJwk, 'ES256') as CryptoKey, until };
}

/**
 * The keys a token may have been signed with: the one its header names (the current, or a previous
 * one in its overlap), or for a token without kid (signed before rotation existed) every key held.
 */
async function verifyingKeys(signer: Signer, token: string, now: Date): Promise<CryptoKey[]> {
  let kid: unknown;
  try {
    kid = decodeProtectedHeader(token).kid;
  } catch {
    return [signer.publicKey]; // jwtVerify says what is malformed
  }
  const live = () => signer.previous.filter((p) => p.until > now);
  if (kid === undefined) return [signer.publicKey, ...live().map((p) => p.publicKey)];
  if (kid === signer.kid) return [signer.publicKey];
  let found = live().find((p) => p.kid === kid);
  if (!found && signer.refresh) {
    await signer.refresh();
    if (kid === signer.kid) return [signer.publicKey];
    found = live().find((p) => p.kid === kid);
  }
  return found ? [found.publicKey] : [];
}

async function sign(signer: Signer, audience: string, claims: JWTPayload, ttlSeconds: number, now = new Date()): Promise<string> {
  const iat = Math.floor(now.getTime() / 1000);
  return new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: signer.kid }).setIssuer(Issuer).setAudience(audience)
    .setIssuedAt(iat).setExpirationTime(iat + ttlSeconds).setJti(claims.jti ?? randomUUID()).sign(signer.privateKey);
}

/**
 * Verifies a token of one audience. Failures are 'unauthenticated' with reason token_expired or
 * token_invalid; the message never echoes the token.
 */
async function verify(signer: Signer, token: string, audience: string, what: string, now?: Date): Promise<JWTPayload> {
  if (typeof token !== 'string' || token.length === 0 || token.length > MaxTokenLength) throw unauthenticated('token_invalid', `${what} is malformed`);
  const keys = await verifyingKeys(signer, token, now ?? new Date());
  if (keys.length === 0) throw unauthenticated('token_invalid', `${what} is signed with a key this service does not accept (retired or unknown)`);
  let failure: unknown;
  for (const key of keys) {
    try {
      const { payload } = await jwtVerify(token, key, { issuer: Issuer, audience, algorithms: ['ES256'], ...(now ? { currentDate: now } : {}) });
      return payload;
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw unauthenticated('token_expired', `${what} has expired`);
      failure = err;
    }
  }
  throw unauthenticated('token_invalid', `${what} is not valid (${failure instanceof joseErrors.JOSEError ? failure.code : 'malformed'})`);
}

const unauthenticated = ErrUnauthenticated;

export interface EnrollClaims {
  tenant: string;
  jti: string;
  caFingerprint: string;
  endpoint?: string;
  exp: number;
}

export async function signEnrollToken(signer: Signer, c: { tenant: string; caFingerprint: string; endpoint: string; ttlSeconds: number }): Promise<string> {
  return sign(signer, AudEnroll, { tenant: c.tenant, caFingerprint: c.caFingerprint, endpoint: c.endpoint }, c.ttlSeconds);
}

export async function verifyEnrollToken(signer: Signer, token: string, now?: Date): Promise<EnrollClaims> {
  const p = await verify(signer, token, AudEnroll, 'enrollment token', now);
  if (typeof p.tenant !== 'string' || typeof p.jti !== 'string' || typeof p.caFingerprint !== 'string' || typeof p.exp !== 'number') {
    throw unauthenticated('token_invalid', 'enrollment token lacks tenant, jti or caFingerprint');
  }
  return { tenant: p.tenant, jti: p.jti, caFingerprint: p.caFingerprint, exp: p.exp, ...(typeof p.endpoint === 'string' ? { endpoint: p.endpoint } : {}) };
}

/** The caller of the API: a JWT's claims, or an API key's (service/api/keys.ts). */
export type ApiClaims = Principal;

export async function signApiToken(signer: Signer, c: Omit<ApiClaims, 'keyId'>, ttlSeconds: number): Promise<string> {
  return sign(signer, AudApi, { role: c.role, sub: c.sub, ...(c.tenant ? { tenant: c.tenant } : {}) }, ttlSeconds);
}

export async function verifyApiToken(signer: Signer, token: string): Promise<ApiClaims> {
  const p = await verify(signer, token, AudApi, 'API token');
  const role = p.role;
  if (!isRole(role)) throw unauthenticated('token_invalid', 'API token has no known role');
  if (isHosterRole(role)) return { role, sub: String(p.sub ?? '') };
  if (typeof p.tenant !== 'string') throw unauthenticated('token_invalid', `API token of role ${role} names no tenant`);
  return { role, sub: String(p.sub ?? ''), tenant: p.tenant };
}

export interface UploadClaims {
  tenant: string;
  key: string;
  maxSize: number;
}

export async function signUploadGrant(signer: Signer, c: UploadClaims, ttlSeconds: number): Promise<{ token: string; expiresAt: Date }> {
  const now = new Date();
  const token = await sign(signer, AudUpload, { tenant: c.tenant, key: c.key, maxSize: c.maxSize, method: 'PUT' }, ttlSeconds, now);
  return { token, expiresAt: new Date(Math.floor(now.getTime() / 1000) * 1000 + ttlSeconds * 1000) };
}

export async function verifyUploadGrant(signer: Signer, token: string): Promise<UploadClaims> {
  const p = await verify(signer, token, AudUpload, 'upload grant');
  if (typeof p.tenant !== 'string' || typeof p.key !== 'string' || typeof p.maxSize !== 'number' || p.method !== 'PUT') {
    throw unauthenticated('token_invalid', 'upload grant lacks tenant, key or maxSize');
  }
  return { tenant: p.tenant, key: p.key, maxSize: p.maxSize };
}

/**
 * A tenant's replica key pair (the envelope's default curve, shared/crypto): the public JWK goes to
 * agents, the private one is kept wrapped under the master key.
 */
export async function newReplicaKeyPair(master: MasterKeys): Promise<{ publicJwk: PublicJwk; wrappedPrivate: string }> {
  const pair = await generateRecipientKeyPair();
  const kid = randomUUID();
  const wrappedPrivate = await master.wrap(new TextEncoder().encode(JSON.stringify({ ...pair.privateKey, kid })));
  return { publicJwk: { ...pair.publicKey, kid }, wrappedPrivate };
}

/** The private JWK of a tenant's replica key. */
export async function unwrapReplicaKey(master: MasterKeys, wrapped: string): Promise<PrivateJwk> {
  const plaintext = await master.unwrap(wrapped, 'a tenant replica key');
  return checkJwk(JSON.parse(new TextDecoder().decode(plaintext)), 'private', 'replica key') as PrivateJwk;
}
