/**
 * Errors with identity. A LifeboatError is a mistake or a condition the user can act on: it carries a
 * stable code, an HTTP status for the API, and a cause. The CLI prints it as one line; the API turns it
 * into a JSON error. Anything else thrown is a bug and keeps its stack.
 */
export type ErrorCode =
  | 'invalid_argument'
  | 'not_found'
  | 'already_exists'
  | 'corrupt'
  | 'unsupported'
  | 'io'
  | 'unauthenticated'
  | 'forbidden'
  | 'conflict'
  | 'tampered'
  | 'unavailable'
  | 'too_large'
  | 'rate_limited'
  | 'precondition_failed';

const statusByCode: Record<ErrorCode, number> = {
  invalid_argument: 400,
  not_found: 404,
  already_exists: 409,
  corrupt: 422,
  unsupported: 422,
  io: 500,
  unauthenticated: 401,
  forbidden: 403,
  conflict: 409,
  tampered: 422,
  unavailable: 503,
  too_large: 413,
  rate_limited: 429,
  precondition_failed: 412,
};

export class LifeboatError extends Error {
  readonly code: ErrorCode;
  readonly status: number;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; status?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'LifeboatError';
    this.code = code;
    this.status = options?.status ?? statusByCode[code];
  }
}

export const ErrInvalidArgument = (message: string, cause?: unknown) => new LifeboatError('invalid_argument', message, { cause });
export const ErrNotFound = (message: string, cause?: unknown) => new LifeboatError('not_found', message, { cause });
export const ErrCorrupt = (message: string, cause?: unknown) => new LifeboatError('corrupt', message, { cause });
export const ErrUnsupported = (message: string, cause?: unknown) => new LifeboatError('unsupported', message, { cause });
export const ErrTampered = (message: string, cause?: unknown) => new LifeboatError('tampered', message, { cause });

export function isLifeboatError(err: unknown): err is LifeboatError {
  return err instanceof LifeboatError;
}

/** System errors a user can act on (a missing file, a full disk) rather than bugs. */
const userSystemErrors = new Set(['ENOENT', 'EACCES', 'EPERM', 'EISDIR', 'ENOTDIR', 'ENOSPC', 'EEXIST', 'EROFS', 'ECONNREFUSED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND']);

/** A one-line description of an error a user can act on, or undefined for a bug. */
export function userMessage(err: unknown): string | undefined {
  if (isLifeboatError(err)) return err.message;
  const e = err as NodeJS.ErrnoException | undefined;
  if (e && typeof e.code === 'string' && userSystemErrors.has(e.code)) {
    const where = e.path ? `${e.path}: ` : '';
    return `${where}${describeErrno(e.code)}`;
  }
  return undefined;
}

function describeErrno(code: string): string {
  switch (code) {
    case 'ENOENT': return 'no such file or directory';
    case 'EACCES': case 'EPERM': return 'permission denied';
    case 'EISDIR': return 'is a directory';
    case 'ENOTDIR': return 'not a directory';
    case 'ENOSPC': return 'no space left on device';
    case 'EEXIST': return 'already exists';
    case 'EROFS': return 'read-only file system';
    case 'ECONNREFUSED': return 'connection refused';
    case 'ETIMEDOUT': return 'timed out';
    default: return code;
  }
}

/** Wraps an error with the operation in short words: "apply log 1f: <cause>". Keeps the code. */
export function wrap(op: string, err: unknown): Error {
  if (isLifeboatError(err)) return new LifeboatError(err.code, `${op}: ${err.message}`, { cause: err, status: err.status });
  const msg = userMessage(err);
  if (msg !== undefined) {
    // "open /a/b: /a/b: no such file" says the path twice: name it once, where op already does.
    const path = (err as NodeJS.ErrnoException).path;
    const text = path && op.includes(path) && msg.startsWith(`${path}: `) ? msg.slice(path.length + 2) : msg;
    return new LifeboatError('io', `${op}: ${text}`, { cause: err });
  }
  return err instanceof Error ? err : new Error(String(err));
}
