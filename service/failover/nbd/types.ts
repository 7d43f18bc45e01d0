/**
 * What the NBD server serves and the limits it keeps (docs/formats/nbd.md). An export is one
 * recovery point's disk for one failover; the server never lists or guesses names: it asks the
 * resolver, and a name the resolver does not know is refused at the handshake.
 */
import type { Logger } from 'pino';
import type { DiskImage } from '../../../shared/disk/types.js';

export interface NbdExport {
  name: string;
  description?: string;
  /** Virtual size in bytes: what the handshake announces and requests are checked against. */
  size: number;
  /** Opens the point's chain read-only; called once per export while the server serves it. */
  open(): Promise<DiskImage>;
}

export type ExportResolver = (exportName: string) => Promise<NbdExport | undefined>;

export interface NbdServerOptions {
  log?: Logger | undefined;
  resolve: ExportResolver;
}

/** Largest READ (and BLOCK_STATUS range) served; advertised as NBD_INFO_BLOCK_SIZE's maximum. */
export const MaxPayloadBytes = 32 * 1024 * 1024;
/** Advertised minimum and preferred block sizes. */
export const MinimumBlockBytes = 1;
export const PreferredBlockBytes = 4096;
/** Option data beyond this is skipped and refused (NBD_REP_ERR_TOO_BIG). */
export const MaxOptionBytes = 64 * 1024;
/** Options per connection before the server hangs up (a client that never ends the handshake). */
export const MaxOptions = 1000;
/** Requests a connection may have in flight; beyond it the server reads no further request. */
export const MaxInFlight = 128;
/**
 * READs sent together whose ranges follow one another are read and answered as one run of at most
 * this many bytes (read.ts): one image read and one socket write for many requests.
 */
export const CoalesceBytes = 2 * 1024 * 1024;
/** READ runs one connection has reading at once; the threads that read files are few (libuv's pool of 4). */
export const MaxRunsInFlight = 4;
/**
 * READ reply bytes one connection has being read or waiting for the socket before it starts reading
 * more: enough to keep the client busy while the next run is read, no more.
 */
export const WriteAheadBytes = 4 * 1024 * 1024;
/** Reply bytes one connection may hold in memory (at least one MaxPayloadBytes request). */
export const ConnectionBufferBytes = 32 * 1024 * 1024;
/** Block status descriptors per reply. */
export const MaxDescriptors = 64 * 1024;

/** An export once opened: the image is shared by every connection to it. */
export interface OpenExport {
  exp: NbdExport;
  image: DiskImage;
}

/** What the handshake agreed on. */
export interface Session {
  exp: OpenExport;
  structured: boolean;
  /** The id of base:allocation when selected for this export, else undefined. */
  allocationContext: number | undefined;
  transmissionFlags: number;
}

/** Counters for metrics. */
export interface NbdStats {
  connectionsTotal: number;
  connectionsOpen: number;
  requests: number;
  /** Data bytes sent in READ replies (holes not counted). */
  bytesRead: number;
  /** READ runs served: each one image read (per data extent) answering one READ or several coalesced. */
  readRuns: number;
}
