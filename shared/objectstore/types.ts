/**
 * The one interface every object store implements (file, S3, Azure) and every wrapper (retry,
 * timeout, limits, faults, logging) both consumes and implements. Methods speak the domain; the
 * contract is normative in docs/formats/objectstore.md.
 */
import type { Readable } from 'node:stream';

/**
 * The bytes of a put. A Buffer or a BodyFactory can be read again (a retry re-sends them); a Readable
 * or an AsyncIterable is one-shot (the retry wrapper spools it to a temporary file first).
 */
export type Body = Buffer | Readable | AsyncIterable<Buffer | Uint8Array> | BodyFactory;

/** Makes a fresh stream of the same bytes on every call, so a put can be retried without spooling. */
export interface BodyFactory {
  (): Readable | AsyncIterable<Buffer | Uint8Array>;
  /** Length in bytes, when known (lets S3 skip buffering a single part to learn it). */
  readonly contentLength?: number;
}

export interface PutOptions {
  /** Length of the body in bytes, when the caller knows it. A mismatch fails the put. */
  contentLength?: number;
  signal?: AbortSignal;
}

export interface ByteRange {
  /** First byte, 0-based. Must be below the object's size. */
  offset: number;
  /** At least 1. A range running past the end is clamped to the end. */
  length: number;
}

export interface GetOptions {
  range?: ByteRange;
  signal?: AbortSignal;
}

export interface SignalOptions {
  signal?: AbortSignal;
}

export interface ObjectInfo {
  size: number;
  /** Opaque version tag of the stored bytes, when the backend has one. */
  etag?: string;
  lastModified: Date;
}

export interface ListEntry {
  key: string;
  size: number;
  lastModified: Date;
}

export type GrantOperation = 'put' | 'get';

export interface GrantOptions {
  operation: GrantOperation;
  /** Seconds the URL stays valid (1 to MaxGrantSeconds). */
  expiresIn: number;
  /** When the validity starts (default now); tests and clock-skew handling move it. */
  issuedAt?: Date;
}

/** A time-limited URL that allows exactly one operation on exactly one key. */
export interface Grant {
  url: string;
  method: 'PUT' | 'GET';
  /** Headers the client must send with the request (e.g. x-ms-blob-type for Azure). */
  headers: Record<string, string>;
  expiresAt: Date;
}

/** A week, the longest an S3 presigned URL may live; the same bound holds for every backend. */
export const MaxGrantSeconds = 7 * 24 * 3600;

export interface ObjectStore {
  /** A URL naming this store with any credentials removed; safe to log. */
  readonly location: string;
  /**
   * Stores body under key, replacing any object there. All or nothing: until it resolves no reader
   * sees the new bytes, and if it rejects (error or abort) readers still see the old object or none.
   */
  put(key: string, body: Body, options?: PutOptions): Promise<void>;
  /**
   * A stream of the object's bytes (or of range, clamped to the end). A missing object rejects with
   * LifeboatError 'not_found'; a range starting at or past the end with 'invalid_argument' (status 416).
   */
  get(key: string, options?: GetOptions): Promise<Readable>;
  /** Size, etag and modification time; a missing object rejects with 'not_found'. */
  head(key: string, options?: SignalOptions): Promise<ObjectInfo>;
  /** Every object whose key starts with prefix (a plain string prefix), in ascending byte order. */
  list(prefix: string, options?: SignalOptions): AsyncIterable<ListEntry>;
  /** Removes the object; a missing object is not an error. */
  delete(key: string, options?: SignalOptions): Promise<void>;
  /** A URL a client without credentials can use once for operation on key until it expires. */
  grant(key: string, options: GrantOptions): Promise<Grant>;
  /** Releases connections and timers. */
  close(): Promise<void>;
}
