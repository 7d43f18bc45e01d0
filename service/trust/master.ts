/**
 * The master key ring: the current master key (keys/master.key) and, between a rotation and its
 * retirement, the previous one (keys/master.key.previous). Tenants' replica private keys are wrapped
 * under a master key as a compact JWE (dir + A256GCM) whose protected header names it (`kid`, an
 * id derived from the key: SHA-256 of a label and the key, 16 hex digits, which tells nothing of the
 * key). A wrap without kid predates rotation and is tried with each key (GCM refuses a wrong one).
 * A kid this process does not hold makes it read the files again once: another process rotated.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { CompactEncrypt, compactDecrypt, decodeProtectedHeader } from 'jose';
import { LifeboatError } from '../../shared/errors.js';

export const MasterKeyBytes = 32;
/** How often a process reads the key files again when it meets a key it does not hold. */
const ReloadEveryMs = 5_000;

/** The file that holds the previous master key while a rotation has not been retired. */
export function previousMasterKeyFile(masterKeyFile: string): string {
  return `${masterKeyFile}.previous`;
}

/** A master key's id: not secret, and it reveals nothing of the key. */
export function masterKeyId(key: Buffer): string {
  return createHash('sha256').update('lifeboat master key id\n').update(key).digest('hex').slice(0, 16);
}

/** Parses a master key file's text (base64 of 32 bytes). */
export function parseMasterKey(text: string, file: string): Buffer {
  const key = Buffer.from(text.trim(), 'base64');
  if (key.length !== MasterKeyBytes) throw new LifeboatError('corrupt', `${file}: master key must be ${MasterKeyBytes} bytes (base64)`);
  return key;
}

async function readOptional(file: string): Promise<string | undefined> {
  return readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
}

export class MasterKeys {
  /** When a key not held last made this process read the files again (rate limit, not load time). */
  private missedAt = 0;

  constructor(readonly file: string, public current: Buffer, public previous: Buffer | undefined) {}

  static async load(file: string): Promise<MasterKeys> {
    const ring = new MasterKeys(file, Buffer.alloc(0), undefined);
    await ring.reload();
    return ring;
  }

  get currentId(): string {
    return masterKeyId(this.current);
  }

  get previousId(): string | undefined {
    return this.previous ? masterKeyId(this.previous) : undefined;
  }

  /** Every key held, the current first. */
  all(): Buffer[] {
    return this.previous && !this.previous.equals(this.current) ? [this.current, this.previous] : [this.current];
  }

  /** Reads both files again (the current must exist; the previous is optional). */
  async reload(): Promise<void> {
    const prevFile = previousMasterKeyFile(this.file);
    const [cur, prev] = await Promise.all([readFile(this.file, 'utf8'), readOptional(prevFile)]);
    this.current = parseMasterKey(cur, this.file);
    this.previous = prev === undefined ? undefined : parseMasterKey(prev, prevFile);
  }

  /** Reads the files again for a key not held, at most every few seconds; false when it did not. */
  private async reloadForMiss(): Promise<boolean> {
    if (Date.now() - this.missedAt <= ReloadEveryMs) return false;
    this.missedAt = Date.now();
    await this.reload();
    return true;
  }

  /**
   * Runs open with every key held; when it fails, reads the files again (at most every few seconds)
   * and tries once more: another process may have re-sealed the secret under a new master key.
   */
  async withKeys<T>(open: (keys: Buffer[]) => T): Promise<T> {
    try {
      return open(this.all());
    } catch (err) {
      if (!(await this.reloadForMiss())) throw err;
      return open(this.all());
    }
  }

  /** Wraps a secret under the current master key, naming it in the header. */
  async wrap(plaintext: Uint8Array): Promise<string> {
    return new CompactEncrypt(plaintext).setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: this.currentId }).encrypt(this.current);
  }

  /** The id of the master key a wrap names, or undefined for a wrap made before rotation existed. */
  static wrappedWith(wrapped: string): string | undefined {
    const kid = decodeProtectedHeader(wrapped).kid;
    return typeof kid === 'string' ? kid : undefined;
  }

  /** Unwraps a secret wrapped under any master key held (reading the files again for an unknown one). */
  async unwrap(wrapped: string, what: string): Promise<Uint8Array> {
    const kid = MasterKeys.wrappedWith(wrapped);
    if (kid !== undefined && !this.all().some((k) => masterKeyId(k) === kid)) await this.reloadForMiss();
    const candidates = kid === undefined ? this.all() : this.all().filter((k) => masterKeyId(k) === kid);
    for (const key of candidates) {
      try {
        return (await compactDecrypt(wrapped, key, { keyManagementAlgorithms: ['dir'], contentEncryptionAlgorithms: ['A256GCM'] })).plaintext;
      } catch {
        // the next key, if any
      }
    }
    throw new LifeboatError('corrupt', `${what} does not open with ${kid === undefined ? 'any master key held' : `master key ${kid}, which this service does not hold`}`);
  }
}
