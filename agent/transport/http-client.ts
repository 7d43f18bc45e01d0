/**
 * One HTTP(S) request with node's client, the way the agent needs it: mutual TLS against a pinned CA,
 * a streamed or small body, a bounded response, and failures turned into LifeboatErrors a user can
 * read ("service https://dr:9443 does not answer: connection refused").
 */
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { createSecureContext } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import type { z } from 'zod';
import { LifeboatError, userMessage } from '../../shared/errors.js';
import type { ErrorCode } from '../../shared/errors.js';
import { errorResponseSchema } from '../../shared/protocol/schemas.js';

export const MaxResponseBytes = 16 << 20;
export const DefaultTimeoutMs = 60_000;

/** TLS material: ca pins the service CA; key and cert present the agent's client certificate. */
export interface TlsOptions {
  ca?: string;
  key?: string;
  cert?: string;
  /** Only for fetching the CA before pinning it (protocol §1.1): the caller checks the fingerprint. */
  insecure?: boolean;
}

export interface HttpRequest {
  method: string;
  url: string;
  headers?: Record<string, string>;
  body?: Buffer | Readable;
  tls?: TlsOptions;
  timeoutMs?: number;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The server's certificate (DER) for TLS connections, for pinning. */
  peerCertificateDer?: Buffer;
}

const ErrorCodes = new Set<string>(['invalid_argument', 'not_found', 'already_exists', 'corrupt', 'unsupported', 'io', 'unauthenticated', 'forbidden', 'conflict', 'tampered', 'unavailable', 'too_large']);

/** An error response of the service, with its stable code and reason (protocol §11). */
export class ServiceError extends LifeboatError {
  constructor(code: ErrorCode, message: string, readonly reason: string | undefined, status: number) {
    super(code, message, { status });
    this.name = 'ServiceError';
  }

  /** 5xx are worth retrying with backoff; 4xx are not. */
  get retryable(): boolean {
    return this.status >= 500;
  }
}

export function isRetryable(err: unknown): boolean {
  if (err instanceof ServiceError) return err.retryable;
  return err instanceof LifeboatError && err.code === 'unavailable';
}

/**
 * Connections are kept alive and reused, one pool per TLS identity (CA, key, certificate), whose
 * secure context is made once: before, every request made a new TCP connection, a new secure
 * context (parsing the CA, key and certificate again) and a full handshake with client certificate,
 * three per chunk of a base (grant, upload, commit). Idle sockets do not keep the process alive and
 * close after a few seconds; the server's Keep-Alive timeout is respected. TLS sessions are cached
 * per pool and resumed when a new connection is needed.
 */
/** An idle connection closes after this long (below node servers' 5 s keep-alive, so the client closes first). */
const IdleMs = 4_000;
const MaxPools = 8;
const httpsPools = new Map<string, HttpsAgent>();
const httpPool = new HttpAgent({ keepAlive: true, timeout: IdleMs });

/** The pool of connections for one TLS identity (a few per process: the agent's, the public roots'). */
function httpsPool(tls: TlsOptions): HttpsAgent {
  const id = JSON.stringify([tls.ca ?? null, tls.key ?? null, tls.cert ?? null]);
  let pool = httpsPools.get(id);
  if (!pool) {
    if (httpsPools.size >= MaxPools) {
      const [oldestId, oldest] = httpsPools.entries().next().value as [string, HttpsAgent];
      oldest.destroy();
      httpsPools.delete(oldestId);
    }
    const secureContext = createSecureContext({ ca: tls.ca, key: tls.key, cert: tls.cert });
    pool = new HttpsAgent({ keepAlive: true, secureContext, timeout: IdleMs });
    httpsPools.set(id, pool);
  }
  return pool;
}

/** Closes every kept-alive connection (tests; a process exits without it, idle sockets are unref'd). */
export function closeConnections(): void {
  for (const pool of httpsPools.values()) pool.destroy();
  httpsPools.clear();
  httpPool.destroy();
}

/** Sends the request; resolves with any HTTP response (the caller checks the status). */
export function send(req: HttpRequest): Promise<HttpResponse> {
  const url = new URL(req.url);
  const isHttps = url.protocol === 'https:';
  const doRequest = isHttps ? httpsRequest : httpRequest;
  const tls = req.tls ?? {};
  return new Promise<HttpResponse>((resolve, reject) => {
    const r = doRequest(url, {
      method: req.method,
      headers: { ...(Buffer.isBuffer(req.body) ? { 'content-length': String(req.body.length) } : {}), ...req.headers },
      // Fetching the CA before pinning it (insecure) takes a connection of its own, never pooled.
      ...(isHttps ? (tls.insecure ? { rejectUnauthorized: false, agent: false } : { agent: httpsPool(tls) }) : { agent: httpPool }),
    }, (res) => {
      const chunks: Buffer[] = [];
      let total = 0;
      // Only the CA fetch pins what it got; reading the certificate costs on every answer otherwise.
      const peer = isHttps && tls.insecure ? (res.socket as TLSSocket).getPeerCertificate?.() : undefined;
      res.on('data', (c: Buffer) => {
        total += c.length;
        if (total > MaxResponseBytes) res.destroy(new LifeboatError('too_large', `${url.origin}: response larger than ${MaxResponseBytes} bytes`));
        else chunks.push(c);
      });
      res.on('error', (err) => reject(unreachable(url, err)));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), peerCertificateDer: peer?.raw }));
    });
    r.setTimeout(req.timeoutMs ?? DefaultTimeoutMs, () => r.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    r.on('error', (err) => reject(unreachable(url, err)));
    if (req.body === undefined) r.end();
    else if (Buffer.isBuffer(req.body)) r.end(req.body);
    else {
      req.body.on('error', (err) => r.destroy(err));
      req.body.pipe(r);
    }
  });
}

function unreachable(url: URL, err: unknown): Error {
  if (err instanceof LifeboatError) return err;
  const e = err as NodeJS.ErrnoException;
  const tlsCodes: Record<string, string> = {
    CERT_HAS_EXPIRED: 'the service certificate has expired',
    DEPTH_ZERO_SELF_SIGNED_CERT: 'the service certificate is not issued by the pinned CA',
    UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'the service certificate is not issued by the pinned CA',
    SELF_SIGNED_CERT_IN_CHAIN: 'the service certificate is not issued by the pinned CA',
    ERR_TLS_CERT_ALTNAME_INVALID: 'the service certificate does not name this host',
  };
  if (e.code && tlsCodes[e.code]) return new LifeboatError('unauthenticated', `service ${url.origin}: ${tlsCodes[e.code]}`, { cause: err });
  // A TLS alert from the server: it refused our client certificate (expired, revoked, unknown).
  if (/alert|certificate/i.test(e.message ?? '')) return new LifeboatError('unauthenticated', `service ${url.origin} refused this agent's certificate (${e.message}); re-enroll if it expired or was revoked`, { cause: err });
  const why = userMessage(err) ?? e.message ?? String(err);
  return new LifeboatError('unavailable', `service ${url.origin} does not answer: ${why.replace(/^.*?: /, '')}`, { cause: err });
}

/** Sends and expects a 2xx; a JSON error body becomes a ServiceError with the service's code and message. */
export async function sendOk(req: HttpRequest): Promise<HttpResponse> {
  const res = await send(req);
  if (res.status >= 200 && res.status < 300) return res;
  throw serviceError(req, res.status, res.body);
}

/** The error an answer other than 2xx stands for: the service's code, reason and message when it sent them. */
function serviceError(req: HttpRequest, status: number, bodyBytes: Buffer): ServiceError {
  let code: ErrorCode = status >= 500 ? 'unavailable' : 'invalid_argument';
  let message = `HTTP ${status}`;
  let reason: string | undefined;
  let body: unknown;
  try {
    body = JSON.parse(bodyBytes.toString('utf8'));
  } catch {
    // not JSON: keep the status line
  }
  const parsed = errorResponseSchema.safeParse(body);
  if (parsed.success) {
    if (ErrorCodes.has(parsed.data.error.code)) code = parsed.data.error.code as ErrorCode;
    if (parsed.data.error.message) message = parsed.data.error.message;
    reason = parsed.data.error.reason;
  }
  if (status === 401 && code === 'invalid_argument') code = 'unauthenticated';
  const where = new URL(req.url);
  return new ServiceError(code, `service ${where.origin}: ${message}`, reason, status);
}

/**
 * A download of any size (no body): resolves with the 2xx answer's body as a stream once its headers
 * came; any other answer is read (bounded) and rejected as sendOk does. The caller reads or destroys it.
 */
export function openStream(req: Omit<HttpRequest, 'body'>): Promise<Readable> {
  const url = new URL(req.url);
  const isHttps = url.protocol === 'https:';
  const tls = req.tls ?? {};
  return new Promise<Readable>((resolve, reject) => {
    const r = (isHttps ? httpsRequest : httpRequest)(url, {
      method: req.method, headers: req.headers ?? {}, ...(isHttps ? { agent: httpsPool(tls) } : { agent: httpPool }),
    }, (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 200 && status < 300) {
        r.setTimeout(0);
        resolve(res);
        return;
      }
      const chunks: Buffer[] = [];
      let total = 0;
      res.on('data', (c: Buffer) => { total += c.length; if (total <= MaxResponseBytes) chunks.push(c); });
      res.on('error', (err) => reject(unreachable(url, err)));
      res.on('end', () => reject(serviceError(req, status, Buffer.concat(chunks))));
    });
    r.setTimeout(req.timeoutMs ?? DefaultTimeoutMs, () => r.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    r.on('error', (err) => reject(unreachable(url, err)));
    r.end();
  });
}

type JsonRequest = Omit<HttpRequest, 'body'> & { json?: unknown };

/** Sends JSON, expects a 2xx with a JSON body (or none). */
export async function sendJson<T>(req: JsonRequest): Promise<T> {
  const body = req.json === undefined ? undefined : Buffer.from(JSON.stringify(req.json));
  const res = await sendOk({ ...req, body, headers: { ...(body ? { 'content-type': 'application/json' } : {}), accept: 'application/json', ...req.headers } });
  if (res.body.length === 0) return undefined as T;
  try {
    return JSON.parse(res.body.toString('utf8')) as T;
  } catch (err) {
    throw new LifeboatError('corrupt', `service ${new URL(req.url).origin}: response is not JSON`, { cause: err });
  }
}

/**
 * Sends JSON, expects a 2xx whose JSON body the protocol's schema accepts (shared/protocol/schemas.ts):
 * unknown fields are dropped, anything else unexpected (a missing field, an unknown state) is one
 * line naming the request and the field, never guessed at (protocol §12).
 */
export async function sendParsed<S extends z.ZodType>(schema: S, req: JsonRequest): Promise<z.output<S>> {
  const parsed = schema.safeParse(await sendJson<unknown>(req));
  if (parsed.success) return parsed.data;
  const url = new URL(req.url);
  throw new LifeboatError('corrupt', `service ${url.origin}: unexpected answer to ${req.method} ${url.pathname}: ${describeIssue(parsed.error)}`);
}

function describeIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'does not match the protocol';
  const where = issue.path.length > 0 ? issue.path.join('.') : 'body';
  return `${where}: ${issue.message}`.replace(/\s+/g, ' ');
}
