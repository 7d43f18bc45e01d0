/**
 * How adapters report backend failures: missing objects as 'not_found', refusals as 'forbidden',
 * and anything worth retrying (network failures, 5xx, throttling, timeouts) as 'unavailable', the
 * one code the retry wrapper retries. Messages never include credentials or signed URLs.
 */
import { LifeboatError, isLifeboatError } from '../errors.js';

const retryableErrnos = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'ERR_STREAM_PREMATURE_CLOSE']);
const throttlingCodes = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'RequestTimeout', 'RequestTimeTooSkewed', 'InternalError', 'ServerBusy', 'OperationTimedOut', 'TooManyRequests', 'RequestLimitExceeded']);

/** The HTTP status a backend error carries (AWS SDK $metadata, Azure RestError), if any. */
function httpStatus(err: unknown): number | undefined {
  const e = err as { $metadata?: { httpStatusCode?: number }; statusCode?: number } | undefined;
  return e?.$metadata?.httpStatusCode ?? e?.statusCode;
}

/** True if err is a caller's abort (not retried, passed on as it is). */
export function isAbort(err: unknown): boolean {
  const name = (err as { name?: string } | undefined)?.name;
  return name === 'AbortError' || (err as { code?: string } | undefined)?.code === 'ABORT_ERR';
}

/** Only 'unavailable' is retried: adapters and wrappers map transient failures to it. */
export function isRetryable(err: unknown): boolean {
  return isLifeboatError(err) && err.code === 'unavailable';
}

export function ErrUnavailable(message: string, cause?: unknown): LifeboatError {
  return new LifeboatError('unavailable', message, { cause });
}

/** A range that starts at or past the end of the object. */
export function ErrRangeNotSatisfiable(key: string, offset: number, size?: number): LifeboatError {
  const of = size === undefined ? '' : ` of ${size} bytes`;
  return new LifeboatError('invalid_argument', `get ${key}: range starts at ${offset}, at or past the end of the object${of}`, { status: 416 });
}

/** Maps a backend error to a LifeboatError with op ("put tenants/…") in front; aborts pass through. */
export function storeError(op: string, err: unknown): unknown {
  if (isAbort(err)) return err;
  if (isLifeboatError(err)) return new LifeboatError(err.code, `${op}: ${err.message}`, { cause: err, status: err.status });
  const e = err as { name?: string; code?: string; Code?: string; message?: string } | undefined;
  const status = httpStatus(err);
  const code = e?.Code ?? e?.code ?? e?.name ?? '';
  const detail = `${code || 'error'}${status ? ` (HTTP ${status})` : ''}`;
  if (status === 404 || code === 'NoSuchKey' || code === 'NotFound' || code === 'BlobNotFound' || code === 'ENOENT') {
    return new LifeboatError('not_found', `${op}: no such object`, { cause: err });
  }
  if (status === 416 || code === 'InvalidRange') return new LifeboatError('invalid_argument', `${op}: range not satisfiable`, { cause: err, status: 416 });
  if (status === 401 || status === 403) return new LifeboatError('forbidden', `${op}: access denied: ${detail}`, { cause: err });
  if ((status !== undefined && (status >= 500 || status === 408 || status === 429)) || throttlingCodes.has(code) || retryableErrnos.has(code)) {
    return ErrUnavailable(`${op}: ${detail}`, err);
  }
  if (status === undefined && /socket hang up|network|terminated|other side closed/i.test(e?.message ?? '')) {
    return ErrUnavailable(`${op}: ${e?.message ?? 'network error'}`, err);
  }
  return new LifeboatError('io', `${op}: ${detail}`, { cause: err });
}
