/**
 * Grants for file stores. A directory has no URL of its own, so a file store's grant is a URL the
 * service serves: `<grantBaseUrl>?key=<key>&op=<put|get>&exp=<unix seconds>&sig=<base64url>`, where
 * sig = HMAC-SHA256(signing key, "lifeboat-file-grant-v1\n<op>\n<key>\n<exp>"). The service's route
 * verifies it with verifyFileGrant (or hands the request to fileGrantHandler) before touching the
 * store, so a grant allows one operation on one key until it expires and nothing else.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { ErrInvalidArgument, LifeboatError, isLifeboatError } from '../errors.js';
import { assertValidKey } from './keys.js';
import { grantExpiry } from './checks.js';
import type { Grant, GrantOperation, GrantOptions, ObjectStore } from './types.js';

/** Largest upload through a grant by default: 5 GiB, as for one S3 PUT. */
export const DefaultMaxGrantPutBytes = 5 * 1024 ** 3;
/** Shortest HMAC key accepted: 32 bytes, the size of the SHA-256 output. */
export const MinSigningKeyBytes = 32;
const domain = 'lifeboat-file-grant-v1';

export interface FileGrantConfig {
  /** Absolute http(s) URL of the service's route that serves grants. */
  grantBaseUrl: string;
  /** Secret HMAC key, at least MinSigningKeyBytes bytes. */
  signingKey: Buffer;
}

function signature(signingKey: Buffer, op: GrantOperation, key: string, exp: number): Buffer {
  return createHmac('sha256', signingKey).update(`${domain}\n${op}\n${key}\n${exp}`).digest();
}

export function assertSigningKey(signingKey: Buffer): void {
  if (!Buffer.isBuffer(signingKey) || signingKey.length < MinSigningKeyBytes) {
    throw ErrInvalidArgument(`file grant signing key must be at least ${MinSigningKeyBytes} bytes`);
  }
}

/** Signs a grant for one key and operation. */
export function signFileGrant(config: FileGrantConfig, key: string, options: GrantOptions): Grant {
  assertValidKey(key);
  assertSigningKey(config.signingKey);
  const expiresAt = grantExpiry(options);
  const exp = expiresAt.getTime() / 1000;
  const url = new URL(config.grantBaseUrl);
  url.searchParams.set('key', key);
  url.searchParams.set('op', options.operation);
  url.searchParams.set('exp', String(exp));
  url.searchParams.set('sig', signature(config.signingKey, options.operation, key, exp).toString('base64url'));
  return { url: url.toString(), method: options.operation === 'put' ? 'PUT' : 'GET', headers: {}, expiresAt };
}

const forbidden = (why: string) => new LifeboatError('forbidden', `object grant refused: ${why}`);

/**
 * Verifies a grant URL (or its query) for operation and returns the key it allows. Throws
 * LifeboatError 'forbidden' for a wrong signature, operation or an expired grant.
 */
export function verifyFileGrant(requestUrl: string | URL, operation: GrantOperation, options: { signingKey: Buffer; now?: Date }): string {
  assertSigningKey(options.signingKey);
  const q = new URL(requestUrl, 'http://grant.invalid').searchParams;
  const key = q.get('key');
  const op = q.get('op');
  const expText = q.get('exp');
  const sig = q.get('sig');
  if (key === null || op === null || expText === null || sig === null) throw forbidden('missing key, op, exp or sig');
  if (op !== operation) throw forbidden(`grant is for ${op}, not ${operation}`);
  if (!/^\d{1,12}$/.test(expText)) throw forbidden('malformed expiry');
  const exp = Number(expText);
  const given = Buffer.from(sig, 'base64url');
  const expected = signature(options.signingKey, operation, key, exp);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw forbidden('bad signature');
  if ((options.now ?? new Date()).getTime() >= exp * 1000) throw forbidden('expired');
  assertValidKey(key);
  return key;
}

/**
 * A fetch-style handler (web Request → Response; mount it in Hono) that serves file-store grants:
 * PUT stores the request body under the granted key (Content-Length required, at most maxBytes),
 * GET streams the object. Errors become their HTTP status with a one-line text body.
 */
export function fileGrantHandler(store: ObjectStore, signingKey: Buffer, options: {
  maxBytes?: number;
  /** Called with a verified grant's key before anything is stored; throws to refuse the upload (a committed object). */
  beforePut?: (key: string) => Promise<void>;
} = {}): (req: Request) => Promise<Response> {
  assertSigningKey(signingKey);
  const maxBytes = options.maxBytes ?? DefaultMaxGrantPutBytes;
  return async (req) => {
    try {
      if (req.method === 'PUT') {
        const key = verifyFileGrant(req.url, 'put', { signingKey });
        await options.beforePut?.(key);
        // A declared length bounds the upload before any byte is stored (the put checks it exactly).
        const length = req.headers.get('content-length');
        if (length === null || !/^\d{1,16}$/.test(length)) throw new LifeboatError('invalid_argument', 'a grant upload needs a Content-Length', { status: 411 });
        if (Number(length) > maxBytes) throw new LifeboatError('too_large', `upload of ${length} bytes is over the limit of ${maxBytes}`);
        const body = req.body === null ? Buffer.alloc(0) : Readable.fromWeb(req.body as WebReadableStream<Uint8Array>);
        await store.put(key, body, { contentLength: Number(length) });
        return new Response(null, { status: 200 });
      }
      if (req.method === 'GET') {
        const key = verifyFileGrant(req.url, 'get', { signingKey });
        const info = await store.head(key);
        const stream = await store.get(key);
        return new Response(Readable.toWeb(stream) as ReadableStream, { status: 200, headers: { 'content-length': String(info.size) } });
      }
      return errorResponse(405, 'invalid_argument', `method ${req.method} not allowed (PUT or GET)`);
    } catch (err) {
      if (!isLifeboatError(err)) throw err;
      const reason = (err as { reason?: unknown }).reason;
      return errorResponse(err.status, err.code, err.message, typeof reason === 'string' ? reason : undefined);
    }
  };
}

/** An error as the agent endpoint answers every error (agent protocol §11): {error: {code, reason?, message}}. */
function errorResponse(status: number, code: string, message: string, reason?: string): Response {
  return new Response(JSON.stringify({ error: { code, ...(reason ? { reason } : {}), message } }), { status, headers: { 'content-type': 'application/json' } });
}
