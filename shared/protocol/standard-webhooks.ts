/**
 * Standard Webhooks signatures (github.com/standard-webhooks/standard-webhooks, spec v1, symmetric):
 * the signed content is `<webhook-id>.<webhook-timestamp>.<body>`, the signature
 * `v1,<base64 HMAC-SHA256 of it>` under the secret's bytes (a secret is written `whsec_<base64>`), sent
 * in the headers `webhook-id`, `webhook-timestamp` (integer Unix seconds) and `webhook-signature` (a
 * space-separated list; any one matching is enough, which lets a secret be rotated).
 *
 * Verification refuses a missing or malformed header, a timestamp further than the tolerance from now
 * (either way), and a signature that matches none (constant-time comparison), each as
 * LifeboatError('unauthenticated') with one line saying which. Replays (an id seen before) are the
 * caller's check (ReplayGuard), since only it knows how long ids are remembered.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { ErrInvalidArgument, LifeboatError } from '../errors.js';

export const SecretPrefix = 'whsec_';
/** The spec asks for at least 24 random bytes (and at most 64). */
export const MinSecretBytes = 24;
export const MaxSecretBytes = 64;
export const DefaultToleranceSec = 5 * 60;

export interface WebhookHeaders {
  'webhook-id': string;
  'webhook-timestamp': string;
  'webhook-signature': string;
}

/** The key bytes of a `whsec_…` secret. */
export function parseSecret(secret: string, field = 'webhook secret'): Buffer {
  if (typeof secret !== 'string' || !secret.startsWith(SecretPrefix)) throw ErrInvalidArgument(`${field}: expected whsec_ followed by base64`);
  const b64 = secret.slice(SecretPrefix.length);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw ErrInvalidArgument(`${field}: the part after whsec_ is not base64`);
  const key = Buffer.from(b64, 'base64');
  if (key.length < MinSecretBytes || key.length > MaxSecretBytes) throw ErrInvalidArgument(`${field}: ${key.length} bytes; Standard Webhooks asks for ${MinSecretBytes} to ${MaxSecretBytes}`);
  return key;
}

/** A fresh secret in the `whsec_` form. */
export function newSecret(): string {
  return SecretPrefix + randomBytes(32).toString('base64');
}

/** A message id: `msg_` and random base64url (never a '.', which would blur the signed content). */
export function newMessageId(): string {
  return `msg_${randomBytes(18).toString('base64url')}`;
}

export function signature(key: Buffer, id: string, timestamp: number, body: string | Buffer): string {
  const mac = createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest('base64');
  return `v1,${mac}`;
}

/** The three headers for one delivery attempt (a retry keeps the id, with a new timestamp). */
export function signHeaders(key: Buffer, body: string, id: string, nowMs = Date.now()): WebhookHeaders {
  const timestamp = Math.floor(nowMs / 1000);
  return { 'webhook-id': id, 'webhook-timestamp': String(timestamp), 'webhook-signature': signature(key, id, timestamp, body) };
}

type HeaderBag = Headers | Record<string, string | string[] | undefined>;

function header(headers: HeaderBag, name: string): string | undefined {
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined;
  const bag = headers as Record<string, string | string[] | undefined>;
  const v = bag[name] ?? Object.entries(bag).find(([k]) => k.toLowerCase() === name)?.[1];
  return Array.isArray(v) ? v.join(' ') : v;
}

/** Checks a delivery's signature and timestamp; returns its id and timestamp. */
export function verifySignature(key: Buffer, headers: HeaderBag, body: string | Buffer, options: { toleranceSec?: number; nowMs?: number } = {}): { id: string; timestamp: number } {
  const id = header(headers, 'webhook-id');
  const ts = header(headers, 'webhook-timestamp');
  const sigs = header(headers, 'webhook-signature');
  if (!id || !ts || !sigs) throw new LifeboatError('unauthenticated', 'webhook: webhook-id, webhook-timestamp and webhook-signature are required');
  if (id.includes('.') || id.length > 256) throw new LifeboatError('unauthenticated', 'webhook: webhook-id is malformed');
  if (!/^\d{1,12}$/.test(ts)) throw new LifeboatError('unauthenticated', 'webhook: webhook-timestamp is not integer seconds');
  const timestamp = Number(ts);
  const now = Math.floor((options.nowMs ?? Date.now()) / 1000);
  const tolerance = options.toleranceSec ?? DefaultToleranceSec;
  if (Math.abs(now - timestamp) > tolerance) throw new LifeboatError('unauthenticated', `webhook: timestamp ${timestamp} is more than ${tolerance} s from now (${now})`);
  const want = Buffer.from(signature(key, id, timestamp, body).slice(3), 'base64');
  for (const s of sigs.split(' ')) {
    const [version, value] = s.split(',', 2);
    if (version !== 'v1' || !value) continue;
    const got = Buffer.from(value, 'base64');
    if (got.length === want.length && timingSafeEqual(got, want)) return { id, timestamp };
  }
  throw new LifeboatError('unauthenticated', 'webhook: no valid v1 signature');
}

/** Remembers delivery ids for a while so a replayed one is refused. One per process unless shared (Redis). */
export interface ReplayGuard {
  /** True the first time an id is seen within ttlSec; false for a replay. */
  firstSeen(id: string, ttlSec: number): Promise<boolean>;
}

/** An in-process ReplayGuard: enough for one failover host process; several need a shared one. */
export class MemoryReplayGuard implements ReplayGuard {
  private readonly seen = new Map<string, number>();

  async firstSeen(id: string, ttlSec: number): Promise<boolean> {
    const now = Date.now();
    if (this.seen.size > 1000) for (const [k, until] of this.seen) if (until < now) this.seen.delete(k);
    const until = this.seen.get(id);
    if (until !== undefined && until >= now) return false;
    this.seen.set(id, now + ttlSec * 1000);
    return true;
  }
}
