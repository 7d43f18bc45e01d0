/**
 * Fuzz target: opening the envelope (docs/formats/envelope.md): its fixed header and lengths, the
 * context, and above all the JWE that wraps the data key, which jose parses. Three kinds of input:
 * byte mutations of sealed objects (X25519 and P-256 recipients); JWEs taken apart and put together
 * wrong (the protected header's JSON changed field by field: algorithms, epk, zip, crit, p2c…; the
 * other parts replaced, cut or added to); and well-formed JWEs an attacker who knows the public key
 * makes with jose under other algorithms, encodings and key lengths. Opening either yields the
 * plaintext or fails with a LifeboatError (tampered, corrupt, unsupported), within the bounds.
 */
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { CompactEncrypt, generateKeyPair as joseKeyPair, importJWK, exportJWK, type JWK } from 'jose';
import { beforeAll, describe, it } from 'vitest';
import { generateKeyPair, openStream, sealStream, type KeyPair } from '../../shared/crypto/index.js';
import { FixedHeaderBytes } from '../../shared/crypto/format.js';
import { collect } from '../../shared/log/testing.js';
import { expectClean, fuzz, testTimeout, untracked } from './harness.js';
import { applyMutations, mutationsArb, type Mutation, type Region } from './mutate.js';

const M = 2 ** 20;
const FrameSize = 4096;

interface Seed { pair: KeyPair; sealed: Buffer; regions: Region[]; hints: number[]; contextLength: number; jwe: string }
const seeds: Record<string, Seed> = {};

async function makeSeed(curve: 'X25519' | 'P-256'): Promise<Seed> {
  const pair = await generateKeyPair(curve);
  const sealed = await collect(sealStream([randomBytes(2 * FrameSize + 100)], { recipient: pair.publicKey, context: Buffer.from('LBHRL context'), frameSize: FrameSize }));
  const contextLength = sealed.readUInt32LE(16);
  const jweLength = sealed.readUInt32LE(20);
  const jweAt = FixedHeaderBytes + contextLength;
  const framesAt = jweAt + jweLength;
  return {
    pair, sealed, contextLength, jwe: sealed.toString('latin1', jweAt, framesAt), hints: [jweLength, contextLength, framesAt, FrameSize],
    regions: [
      { name: 'fixed header', from: 0, length: FixedHeaderBytes },
      { name: 'context', from: FixedHeaderBytes, length: contextLength },
      { name: 'JWE protected header', from: jweAt, length: jweLength },
      { name: 'first frame', from: framesAt, length: 64 },
      { name: 'last tag', from: sealed.length - 16, length: 16 },
    ],
  };
}

beforeAll(async () => {
  seeds.x25519 = await makeSeed('X25519');
  seeds.p256 = await makeSeed('P-256');
}, 60_000);

/** The seed with its JWE replaced (and the length field set to match). */
function withJwe(seed: Seed, jwe: string): Buffer {
  const bytes = Buffer.from(jwe, 'latin1');
  const framesAt = FixedHeaderBytes + seed.contextLength + seed.sealed.readUInt32LE(20);
  const head = Buffer.from(seed.sealed.subarray(0, FixedHeaderBytes + seed.contextLength));
  head.writeUInt32LE(bytes.length, 20);
  return Buffer.concat([head, bytes, seed.sealed.subarray(framesAt)]);
}

async function open(seed: Seed, sealed: Buffer, pieces: number): Promise<void> {
  const chunks: Buffer[] = [];
  const step = Math.max(1, Math.ceil(sealed.length / pieces));
  for (let at = 0; at < sealed.length; at += step) chunks.push(sealed.subarray(at, at + step));
  try {
    const opened = await openStream(chunks, { key: seed.pair.privateKey });
    for await (const _ of opened.plaintext) { /* read every frame */ }
  } catch (err) {
    expectClean(err);
  }
}

const b64 = (v: string | Uint8Array) => Buffer.from(v).toString('base64url');

/** Values worth putting in a protected header field. */
const fieldValue = fc.oneof(
  fc.constantFrom('ECDH-ES+A256KW', 'ECDH-ES', 'ECDH-ES+A128KW', 'A256KW', 'dir', 'RSA-OAEP', 'PBES2-HS256+A128KW', 'none', 'A256GCM', 'A128CBC-HS256', 'DEF', ''),
  fc.constantFrom<unknown>(null, true, 0, -1, 1e308, 2 ** 53, 10_000_000, [], {}, ['b64'], ['exp'], { kty: 'OKP', crv: 'X25519', x: '' }, { kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' },
    { kty: 'OKP', crv: 'Ed25519', x: b64(Buffer.alloc(32)) }, { kty: 'EC', crv: 'P-384', x: b64(Buffer.alloc(48)), y: b64(Buffer.alloc(48)) }, { kty: 'oct', k: b64(Buffer.alloc(32)) },
    { kty: 'OKP', crv: 'X25519', x: b64(Buffer.alloc(32)) }, { kty: 'OKP', crv: 'X25519', x: b64(Buffer.alloc(33, 1)) }),
  fc.jsonValue({ maxDepth: 3 }),
  fc.string({ maxLength: 300 }),
);
const headerField = fc.constantFrom('alg', 'enc', 'epk', 'zip', 'crit', 'kid', 'p2c', 'p2s', 'apu', 'apv', 'cty', 'typ', 'jku', 'jwk', 'x5u', 'iv', 'tag', 'b64', '__proto__', 'constructor');
const partChange = fc.oneof(
  fc.constant({ kind: 'keep' as const }),
  fc.record({ kind: fc.constant('random' as const), length: fc.nat({ max: 700 }) }),
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat({ max: 7 }) }),
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('text' as const), text: fc.string({ maxLength: 40 }) }),
);
type PartChange = typeof partChange extends fc.Arbitrary<infer T> ? T : never;
const jweChange = fc.record({
  header: fc.oneof(
    { weight: 4, arbitrary: fc.array(fc.tuple(headerField, fc.option(fieldValue, { nil: undefined })), { minLength: 1, maxLength: 4 }) },
    { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
  ),
  parts: fc.tuple(partChange, partChange, partChange, partChange),
  shape: fc.constantFrom('keep', 'keep', 'keep', 'drop', 'extra', 'empty'),
});
type JweChange = typeof jweChange extends fc.Arbitrary<infer T> ? T : never;

function changePart(part: string, c: PartChange): string {
  switch (c.kind) {
    case 'keep': return part;
    case 'random': return b64(untracked(() => randomBytes(c.length)));
    case 'flip': {
      const bytes = Buffer.from(part, 'base64url');
      if (bytes.length > 0) bytes[c.at % bytes.length]! ^= 1 << c.bit;
      return b64(bytes);
    }
    case 'cut': return part.slice(0, c.at % (part.length + 1));
    case 'text': return c.text;
  }
}

function changedJwe(jwe: string, c: JweChange): string {
  const parts = jwe.split('.');
  let header: string;
  if (typeof c.header === 'string') {
    header = b64(c.header);
  } else {
    const json = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    for (const [field, value] of c.header) {
      if (value === undefined) delete json[field];
      else Object.defineProperty(json, field, { value, enumerable: true, configurable: true, writable: true });
    }
    header = b64(JSON.stringify(json));
  }
  const rest = parts.slice(1).map((p, i) => changePart(p, c.parts[i]!));
  const all = [header, ...rest];
  if (c.shape === 'drop') all.pop();
  if (c.shape === 'extra') all.push(rest[0] ?? '');
  return c.shape === 'empty' ? '' : all.join('.');
}

/** A JWE an attacker makes with jose under algorithms of its choosing. */
const crafted = fc.record({
  alg: fc.constantFrom('ECDH-ES+A256KW', 'ECDH-ES+A128KW', 'ECDH-ES', 'A256KW', 'dir'),
  enc: fc.constantFrom('A256GCM', 'A128GCM', 'A128CBC-HS256', 'A256CBC-HS512'),
  keyLength: fc.constantFrom(0, 1, 16, 31, 32, 33, 64),
  toRecipient: fc.boolean(),
  extra: fc.dictionary(fc.constantFrom('kid', 'cty', 'typ', 'apu', 'apv', 'x-custom'), fc.string({ maxLength: 30 }), { maxKeys: 2 }),
});
type Crafted = typeof crafted extends fc.Arbitrary<infer T> ? T : never;

let stranger: JWK;
async function craft(seed: Seed, c: Crafted): Promise<string | undefined> {
  const payload = randomBytes(c.keyLength);
  try {
    let key;
    if (c.alg.startsWith('ECDH')) key = await importJWK(c.toRecipient ? seed.pair.publicKey : stranger, c.alg);
    else key = randomBytes(c.alg === 'dir' ? (c.enc === 'A128GCM' ? 16 : c.enc === 'A128CBC-HS256' ? 32 : c.enc === 'A256CBC-HS512' ? 64 : 32) : 32);
    return await new CompactEncrypt(payload).setProtectedHeader({ ...c.extra, alg: c.alg, enc: c.enc }).encrypt(key);
  } catch {
    return undefined; // a combination jose will not make (ECDH-ES with a non-GCM length, …): nothing to try
  }
}

const names = ['x25519', 'p256'] as const;

describe('envelope opening under mutation', () => {
  beforeAll(async () => {
    const { publicKey } = await joseKeyPair('ECDH-ES+A256KW', { crv: 'X25519', extractable: true });
    stranger = await exportJWK(publicKey);
  });

  for (const name of names) {
    it(`${name}: mutated bytes open or fail with a LifeboatError`, async () => {
      const seed = seeds[name]!;
      await fuzz<[Mutation[], number]>('envelope', `${name}-bytes`, [mutationsArb(seed.regions, seed.sealed.length, true, seed.hints), fc.integer({ min: 1, max: 7 })], async (m, pieces) => {
        await open(seed, untracked(() => applyMutations(seed.sealed, m, seed.regions)), pieces);
      }, { share: 0.2, maxAllocation: 17 * M, describe: (m) => untracked(() => applyMutations(seed.sealed, m, seed.regions)) });
    }, testTimeout(0.2));

    it(`${name}: JWEs taken apart and put together wrong fail with a LifeboatError`, async () => {
      const seed = seeds[name]!;
      await fuzz<[JweChange]>('envelope', `${name}-jwe`, [jweChange], async (c) => {
        await open(seed, withJwe(seed, changedJwe(seed.jwe, c)), 1);
      }, { share: 0.2, maxAllocation: 17 * M, describe: (c) => changedJwe(seed.jwe, c) });
    }, testTimeout(0.2));
  }

  it('JWEs made by an attacker under other algorithms fail with a LifeboatError', async () => {
    await fuzz<[Crafted, boolean]>('envelope', 'crafted-jwe', [crafted, fc.boolean()], async (c, p256) => {
      const seed = p256 ? seeds.p256! : seeds.x25519!;
      const jwe = await craft(seed, c);
      if (jwe !== undefined) await open(seed, withJwe(seed, jwe), 1);
    }, { share: 0.2, maxAllocation: 17 * M });
  }, testTimeout(0.2));
});
