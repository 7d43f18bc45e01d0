/**
 * Service errors with a stable machine reason besides the shared code (agent protocol §11), e.g.
 * code 'unauthenticated' with reason 'token_used'. The HTTP layer puts both in the error body.
 */
import type { ErrorCode } from '../shared/errors.js';
import { LifeboatError } from '../shared/errors.js';

export class ServiceError extends LifeboatError {
  readonly reason: string | undefined;
  /** Headers the answer carries (Retry-After of a 429, Connection: close after an unread body). */
  readonly headers: Record<string, string> | undefined;

  constructor(code: ErrorCode, message: string, reason?: string, cause?: unknown, options?: { status?: number; headers?: Record<string, string> }) {
    super(code, message, { ...(cause === undefined ? {} : { cause }), ...(options?.status ? { status: options.status } : {}) });
    this.reason = reason;
    this.headers = options?.headers;
  }
}

export const ErrUnauthenticated = (reason: string, message: string) => new ServiceError('unauthenticated', message, reason);
export const ErrForbidden = (reason: string, message: string) => new ServiceError('forbidden', message, reason);
export const ErrConflict = (reason: string, message: string) => new ServiceError('conflict', message, reason);
export const ErrNotFoundHere = (message: string) => new ServiceError('not_found', message);

/** Too many requests: 429 with Retry-After (whole seconds). */
export const ErrRateLimited = (retryAfterSeconds: number, message: string) =>
  new ServiceError('rate_limited', message, undefined, undefined, { headers: { 'Retry-After': String(retryAfterSeconds) } });

/** The headers an error's answer carries, when it names any. */
export function headersOf(err: unknown): Record<string, string> {
  return err instanceof ServiceError && err.headers ? err.headers : {};
}

/** The stable reason of an error, when it has one. */
export function reasonOf(err: unknown): string | undefined {
  return err instanceof ServiceError ? err.reason : undefined;
}
