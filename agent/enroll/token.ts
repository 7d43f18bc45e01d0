/**
 * The enrollment token as the agent reads it (protocol §2). The agent cannot verify the signature (it
 * has no key yet); it reads the claims to pin the CA and find the endpoint, and refuses a token that
 * is malformed or already expired. The service verifies everything.
 */
import { decodeJwt } from 'jose';
import { z } from 'zod';
import { ErrInvalidArgument, LifeboatError } from '../../shared/errors.js';

const Claims = z.object({
  tenant: z.string().min(1).max(128),
  caFingerprint: z.string().regex(/^[0-9a-f]{64}$/),
  exp: z.number().int().positive(),
  aud: z.union([z.string(), z.array(z.string())]).optional(),
  endpoint: z.url().optional(),
});
export type EnrollmentClaims = z.infer<typeof Claims>;

export function readEnrollmentToken(token: string, now = Date.now()): EnrollmentClaims {
  let raw: unknown;
  try {
    raw = decodeJwt(token.trim());
  } catch (err) {
    throw ErrInvalidArgument('enrollment token is not a JWT (copy the last line printed by: lifeboat-service token create)', err);
  }
  const r = Claims.safeParse(raw);
  if (!r.success) throw ErrInvalidArgument(`enrollment token lacks ${r.error.issues[0]?.path.join('.') || 'its claims'}: not a lifeboat enrollment token`);
  if (r.data.exp * 1000 <= now) throw new LifeboatError('unauthenticated', `enrollment token expired at ${new Date(r.data.exp * 1000).toISOString()}; ask the hoster for a new one`);
  return r.data;
}
