/**
 * The agent's envelope keys (agent protocol §14, docs/reverse.md): recipient key pairs whose public
 * half the service seals reverse logs to. Each private key is `identity/envelope/<kid>.jwk` (mode
 * 0600, never overwritten), `kid` its RFC 7638 thumbprint; old keys stay, so a log sealed to a key
 * before a rotation still opens.
 */
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { calculateJwkThumbprint } from 'jose';
import type { PrivateJwk, PublicJwk } from '../../shared/crypto/keys.js';
import { generateKeyPair, loadPrivateKey, publicPart, saveJwk } from '../../shared/crypto/keys.js';
import type { IdentityFiles } from '../state/store.js';
import { ReverseClient } from './client.js';

export const EnvelopeDir = join('identity', 'envelope');

/** RFC 7638 thumbprint of the key's public members. */
export async function keyId(jwk: PublicJwk): Promise<string> {
  const { kid: _k, d: _d, ...pub } = jwk as PrivateJwk;
  return calculateJwkThumbprint(pub, 'sha256');
}

/** Makes a new key pair and keeps its private key in the state directory; returns the public key. */
export async function newEnvelopeKey(stateDir: string): Promise<{ kid: string; publicKey: PublicJwk }> {
  const dir = join(stateDir, EnvelopeDir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const pair = await generateKeyPair();
  const kid = await keyId(pair.publicKey);
  await saveJwk(join(dir, `${kid}.jwk`), { ...pair.privateKey, kid });
  return { kid, publicKey: { ...publicPart(pair.privateKey), kid } };
}

/** Every private envelope key this agent holds, by kid. */
export async function loadEnvelopeKeys(stateDir: string): Promise<Map<string, PrivateJwk>> {
  const dir = join(stateDir, EnvelopeDir);
  const names = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[];
    throw err;
  });
  const keys = new Map<string, PrivateJwk>();
  for (const name of names.filter((n) => n.endsWith('.jwk') && !n.startsWith('.'))) {
    const key = await loadPrivateKey(join(dir, name));
    keys.set(await keyId(key), key);
  }
  return keys;
}

/**
 * A new envelope key, registered with the service (enrollment, renewal, `envelope-key register`):
 * from then on the service seals reverse logs to it.
 */
export async function registerNewEnvelopeKey(stateDir: string, files: IdentityFiles): Promise<{ kid: string; newest: boolean; registeredAt: string }> {
  const { publicKey } = await newEnvelopeKey(stateDir);
  return new ReverseClient(files).registerKey(publicKey);
}
