/**
 * Portal passwords: argon2id (@node-rs/argon2, prebuilt per platform, no compiler) at the OWASP
 * minimum of 19 MiB, 2 passes, 1 lane, stored as the PHC string. An unknown username is verified
 * against a fixed hash so that it costs as long as a known one.
 */
import { hash, verify } from '@node-rs/argon2';
import { ErrInvalidArgument } from '../../shared/errors.js';

export const MinPasswordLength = 12;
export const MaxPasswordLength = 1024;
// algorithm 2: Argon2id (the package's const enum Algorithm, which isolated modules cannot import).
const Params = { algorithm: 2, memoryCost: 19_456, timeCost: 2, parallelism: 1 };

/** A password's argon2id PHC string; invalid_argument when it is too short or too long. */
export async function hashPassword(password: string): Promise<string> {
  checkPassword(password);
  return hash(password, Params);
}

export function checkPassword(password: string): void {
  if (password.length < MinPasswordLength) throw ErrInvalidArgument(`a password must have at least ${MinPasswordLength} characters`);
  if (password.length > MaxPasswordLength) throw ErrInvalidArgument(`a password must have at most ${MaxPasswordLength} characters`);
}

let dummy: Promise<string> | undefined;

/** Whether password matches the PHC string; with no hash (unknown user, no password set) false, at the same cost. */
export async function verifyPassword(phc: string | null, password: string): Promise<boolean> {
  if (password.length > MaxPasswordLength) return false;
  if (phc === null) {
    await verify(await (dummy ??= hash('lifeboat-no-such-user', Params)), password).catch(() => false);
    return false;
  }
  return verify(phc, password).catch(() => false);
}
