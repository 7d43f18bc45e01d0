/**
 * Recipient key pairs as JWK files. A recipient's public key seals objects to it; its private key opens
 * them. Keys are X25519 by default; P-256 keys are accepted as well (docs/formats/envelope.md, "Why").
 * Files are created exclusively with mode 0600: an existing key is never overwritten.
 */
import { open, readFile } from 'node:fs/promises';
import { exportJWK, generateKeyPair as joseGenerateKeyPair, type JWK } from 'jose';
import { ErrInvalidArgument, LifeboatError } from '../errors.js';

/** The JWE key-management algorithm every wrapped data key uses. */
export const KeyWrapAlgorithm = 'ECDH-ES+A256KW';
/** Curves a recipient key may use; the first is what generateKeyPair makes. */
export const SupportedCurves = ['X25519', 'P-256'] as const;
export type Curve = (typeof SupportedCurves)[number];
/** Largest key file read, so a wrong path to a huge file fails fast. */
const MaxKeyFileBytes = 16 * 1024;

/** A recipient's public key (JWK without `d`). */
export type PublicJwk = JWK & { kty: string; crv: string; x: string };
/** A recipient's private key (JWK with `d`). */
export type PrivateJwk = PublicJwk & { d: string };
/**
 * What opens an object: one private key, or a ring of them (a tenant's current replica key and those
 * it replaced): the wrap's `kid` picks the key, and a wrap without kid is tried with each.
 */
export type RecipientKeys = PrivateJwk | readonly PrivateJwk[];

export interface KeyPair {
  publicKey: PublicJwk;
  privateKey: PrivateJwk;
}

/** Makes a fresh recipient key pair (X25519 unless asked for P-256). */
export async function generateKeyPair(curve: Curve = 'X25519'): Promise<KeyPair> {
  const pair = await joseGenerateKeyPair(KeyWrapAlgorithm, { crv: curve, extractable: true });
  const privateKey = checkJwk(await exportJWK(pair.privateKey), 'private', 'generated key') as PrivateJwk;
  return { privateKey, publicKey: publicPart(privateKey) };
}

/** The public half of a private JWK. */
export function publicPart(key: PrivateJwk | PublicJwk): PublicJwk {
  const { d: _d, ...pub } = key as PrivateJwk;
  return pub;
}

/**
 * Writes a key as a JWK file with mode 0600, refusing to overwrite an existing file
 * (`already_exists`): losing a private key loses every object sealed to it.
 */
export async function saveJwk(path: string, key: PublicJwk | PrivateJwk): Promise<void> {
  let handle;
  try {
    handle = await open(path, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new LifeboatError('already_exists', `${path}: a key file already exists; refusing to overwrite it`);
    throw err;
  }
  try {
    await handle.writeFile(`${JSON.stringify(key)}\n`);
    await handle.chmod(0o600); // the umask may have narrowed it; never wider than 0600 anyway
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes `<base>.jwk` (private) and `<base>.pub.jwk` (public), both mode 0600. */
export async function saveKeyPair(base: string, pair: KeyPair): Promise<{ privatePath: string; publicPath: string }> {
  const privatePath = `${base}.jwk`;
  const publicPath = `${base}.pub.jwk`;
  await saveJwk(privatePath, pair.privateKey);
  await saveJwk(publicPath, pair.publicKey);
  return { privatePath, publicPath };
}

/** Reads a private key file; a file that is not a supported private JWK is `invalid_argument`. */
export async function loadPrivateKey(path: string): Promise<PrivateJwk> {
  return checkJwk(await readJwkFile(path), 'private', path) as PrivateJwk;
}

/** Reads a public key file (a private key file is accepted and reduced to its public part). */
export async function loadPublicKey(path: string): Promise<PublicJwk> {
  return publicPart(checkJwk(await readJwkFile(path), 'public', path));
}

async function readJwkFile(path: string): Promise<unknown> {
  const handle = await open(path, 'r');
  try {
    const st = await handle.stat();
    const size = st.size;
    if (st.isDirectory()) throw ErrInvalidArgument(`${path}: is a directory, not a key file (give the JWK file in it)`);
    if (size > MaxKeyFileBytes) throw ErrInvalidArgument(`${path}: not a key file (${size} bytes; a JWK is under ${MaxKeyFileBytes})`);
  } finally {
    await handle.close();
  }
  const text = await readFile(path, 'utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw ErrInvalidArgument(`${path}: not a key file (not JSON)`);
  }
}

/** Checks the JWK's shape: a supported curve and, for a private key, `d`. */
export function checkJwk(value: unknown, want: 'public' | 'private', where: string): PublicJwk {
  const jwk = value as Record<string, unknown> | null;
  const ok = jwk !== null && typeof jwk === 'object' && typeof jwk.x === 'string'
    && ((jwk.kty === 'OKP' && jwk.crv === 'X25519') || (jwk.kty === 'EC' && jwk.crv === 'P-256' && typeof jwk.y === 'string'));
  if (!ok) throw ErrInvalidArgument(`${where}: not an X25519 or P-256 JWK`);
  if (want === 'private' && typeof jwk.d !== 'string') throw ErrInvalidArgument(`${where}: a public key; opening needs the private key`);
  return jwk as PublicJwk;
}
