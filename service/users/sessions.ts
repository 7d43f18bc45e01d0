/**
 * Portal sessions. The browser holds a JWT (jose, ES256 with the service's signing key, audience
 * lifeboat-portal) naming a session id and expiring with it; the session itself is a Redis key
 * holding who signed in and the session's CSRF secret, with the same expiry. Signing out deletes the
 * key, so the token stops working at once although it has not expired; changing a user's role or
 * removing the user deletes all of that user's sessions (a set per user lists them).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import type { UserRole } from '../catalog/users.js';
import type { Signer } from '../trust/tokens.js';
import { Issuer } from '../trust/tokens.js';

export const AudPortal = 'lifeboat-portal';
export const DefaultSessionSeconds = 8 * 3600;
/**
 * Redis keys of one catalog's portal: sessions name users of that catalog, so two services sharing a
 * Redis with different catalogs (tests; a staging beside production) keep apart.
 */
export function portalKeyPrefix(catalogIdentity: string): string {
  return `lifeboat:portal:${createHash('sha256').update(catalogIdentity).digest('hex').slice(0, 12)}:`;
}

/** Where the portal finds Redis (connected on first use). */
export type RedisSource = () => Promise<Redis>;

export interface Session {
  id: string;
  userId: number;
  username: string;
  tenant: string | null;
  role: UserRole;
  /** The session's CSRF secret: every form of the session carries it. */
  csrf: string;
  expiresAt: number;
}

export type SessionCheck = { ok: true; session: Session } | { ok: false; reason: 'missing' | 'expired' | 'invalid' | 'ended' };

export class SessionStore {
  constructor(private readonly redis: RedisSource, private readonly signer: Signer, private readonly prefix: string, readonly ttlSeconds = DefaultSessionSeconds) {}

  /** A new session for the user and the token of its cookie. */
  async create(user: { id: number; username: string; tenant: string | null; role: UserRole }, now = new Date()): Promise<{ session: Session; token: string }> {
    const id = randomBytes(18).toString('base64url');
    const expiresAt = Math.floor(now.getTime() / 1000) + this.ttlSeconds;
    const session: Session = { id, userId: user.id, username: user.username, tenant: user.tenant, role: user.role, csrf: randomBytes(24).toString('base64url'), expiresAt };
    const r = await this.redis();
    await r.multi().set(this.prefix + 'session:' + id, JSON.stringify(session), 'EXAT', expiresAt)
      .sadd(this.prefix + 'user:' + user.id, id)
      // The user's set lives as long as the longest of its sessions (GT alone never sets a first expiry).
      .expireat(this.prefix + 'user:' + user.id, expiresAt, 'NX').expireat(this.prefix + 'user:' + user.id, expiresAt, 'GT').exec();
    return { session, token: await signSessionToken(this.signer, id, expiresAt, now) };
  }

  /** The session a cookie's token names, or why there is none. */
  async check(token: string | undefined): Promise<SessionCheck> {
    if (!token) return { ok: false, reason: 'missing' };
    let sid: string;
    try {
      const { payload } = await jwtVerify(token, this.signer.publicKey, { issuer: Issuer, audience: AudPortal, algorithms: ['ES256'] });
      if (typeof payload.sid !== 'string') return { ok: false, reason: 'invalid' };
      sid = payload.sid;
    } catch (err) {
      return { ok: false, reason: err instanceof joseErrors.JWTExpired ? 'expired' : 'invalid' };
    }
    const raw = await (await this.redis()).get(this.prefix + 'session:' + sid);
    if (raw === null) return { ok: false, reason: 'ended' };
    return { ok: true, session: JSON.parse(raw) as Session };
  }

  async end(session: Pick<Session, 'id' | 'userId'>): Promise<void> {
    await (await this.redis()).multi().del(this.prefix + 'session:' + session.id).srem(this.prefix + 'user:' + session.userId, session.id).exec();
  }

  /** Ends every session of a user (role changed, user removed, password reset). */
  async endAllOf(userId: number): Promise<number> {
    const r = await this.redis();
    const ids = await r.smembers(this.prefix + 'user:' + userId);
    if (ids.length > 0) await r.del(...ids.map((id) => this.prefix + 'session:' + id));
    await r.del(this.prefix + 'user:' + userId);
    return ids.length;
  }
}

export async function signSessionToken(signer: Signer, sid: string, expiresAt: number, now = new Date()): Promise<string> {
  return new SignJWT({ sid }).setProtectedHeader({ alg: 'ES256', typ: 'JWT' }).setIssuer(Issuer).setAudience(AudPortal)
    .setIssuedAt(Math.floor(now.getTime() / 1000)).setExpirationTime(expiresAt).sign(signer.privateKey);
}

/** Compares two CSRF tokens in constant time; false when either is missing. */
export function sameToken(a: string | undefined, b: string | undefined): boolean {
  if (!a || !b) return false;
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
