/**
 * Service errors with a stable machine reason besides the shared code (agent protocol §11), e.g.
 * code 'unauthenticated' with reason 'token_used'. The HTTP layer puts both in the error body.
 */
import type { ErrorCode } from '../shared/errors.js';
import { LifeboatError } from '../shared/errors.js';

export class ServiceError extends LifeboatError {
  readonly reason: string | undefined;

  constructor(code: ErrorCode, message: string, reason?: string, cause?: unknown) {
    super(code, message, cause === undefined ? undefined : { cause });
    this.reason = reason;
  }
}

export const ErrUnauthenticated = (reason: string, message: string) => new ServiceError('unauthenticated', message, reason);
export const ErrForbidden = (reason: string, message: string) => new ServiceError('forbidden', message, reason);
export const ErrConflict = (reason: string, message: string) => new ServiceError('conflict', message, reason);
export const ErrNotFoundHere = (message: string) => new ServiceError('not_found', message);

/** The stable reason of an error, when it has one. */
export function reasonOf(err: unknown): string | undefined {
  return err instanceof ServiceError ? err.reason : undefined;
}
