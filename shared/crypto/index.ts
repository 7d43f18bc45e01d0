/**
 * The envelope (docs/formats/envelope.md): a fresh data key per object, the plaintext sealed in
 * fixed-size AES-256-GCM frames bound to the object's header, and the data key wrapped as a JWE to the
 * recipient's public key. Keys are JWK files written with mode 0600.
 *
 * - `sealStream(plaintext, { recipient, context })` yields the sealed bytes;
 * - `openStream(sealed, { key })` returns the authenticated context and the verified plaintext;
 * - `generateKeyPair`, `saveKeyPair`, `saveJwk`, `loadPrivateKey`, `loadPublicKey` handle keys.
 */
export { ByteReader, type ByteBatches, type ByteSource } from './byte-reader.js';
export { DefaultFrameSize, EnvelopeMagic, EnvelopeVersion, MaxContextBytes, MaxFrameSize, MinFrameSize } from './format.js';
export {
  SupportedCurves, checkJwk, generateKeyPair, loadPrivateKey, loadPublicKey, publicPart, saveJwk, saveKeyPair,
  type Curve, type KeyPair, type PrivateJwk, type PublicJwk,
} from './keys.js';
export { openFrames, openStream, type OpenOptions, type OpenedFrames, type OpenedStream } from './open.js';
export { FrameSealer, sealStream, type SealOptions } from './seal.js';
