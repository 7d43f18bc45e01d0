/**
 * The one module that builds and parses object keys (layout in docs/formats/objectstore.md), and the
 * rule every adapter applies to any key it is given. Ids are validated so no key built here can
 * leave its tenant's prefix; numbers are fixed-width lowercase hex so listings sort numerically.
 */
import { ErrInvalidArgument } from '../errors.js';

export const MaxKeyBytes = 1024;
export const MaxSegmentLength = 255;
export const MaxIdLength = 64;

const segmentPattern = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;
const idPattern = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
const hex16Pattern = /^[0-9a-f]{16}$/;

/**
 * Throws LifeboatError 'invalid_argument' unless key is a safe relative object key: segments of
 * [A-Za-z0-9._-] joined by '/', none empty, none starting with '.', at most MaxKeyBytes in all.
 * Every adapter calls this before touching its backend, so `..`, absolute paths, backslashes and
 * NUL never reach a filesystem or a URL.
 */
export function assertValidKey(key: string): void {
  const why = keyProblem(key);
  if (why !== undefined) throw ErrInvalidArgument(`invalid object key ${JSON.stringify(key.slice(0, 80))}: ${why}`);
}

function keyProblem(key: string): string | undefined {
  if (typeof key !== 'string' || key.length === 0) return 'empty';
  if (key.length > MaxKeyBytes) return `longer than ${MaxKeyBytes} bytes`;
  if (key.includes('\0')) return 'contains NUL';
  if (key.includes('\\')) return 'contains a backslash';
  if (key.startsWith('/')) return 'absolute';
  for (const segment of key.split('/')) {
    if (segment === '') return 'empty segment';
    if (segment === '.' || segment === '..') return `contains "${segment}"`;
    if (segment.length > MaxSegmentLength) return `segment longer than ${MaxSegmentLength}`;
    if (!segmentPattern.test(segment)) return `segment ${JSON.stringify(segment.slice(0, 40))} has characters outside [A-Za-z0-9._-] or starts with "."`;
  }
  return undefined;
}

/** A list prefix is '' or the start of some valid key (it may end in '/' or mid-segment). */
export function assertValidPrefix(prefix: string): void {
  if (prefix === '') return;
  const why = keyProblem(prefix.endsWith('/') ? `${prefix}x` : prefix);
  if (why !== undefined) throw ErrInvalidArgument(`invalid object key prefix ${JSON.stringify(prefix.slice(0, 80))}: ${why}`);
}

/** Throws unless id is 1..MaxIdLength of [A-Za-z0-9_-], starting alphanumeric. */
export function assertValidId(what: string, id: string): void {
  if (typeof id !== 'string' || id.length === 0 || id.length > MaxIdLength || !idPattern.test(id)) {
    throw ErrInvalidArgument(`invalid ${what} id ${JSON.stringify(String(id).slice(0, 80))}: 1 to ${MaxIdLength} of [A-Za-z0-9_-], starting with a letter or digit`);
  }
}

/** Fixed-width (16 digit) lowercase hex of a non-negative safe integer. */
export function hex16(what: string, n: number): string {
  if (!Number.isSafeInteger(n) || n < 0) throw ErrInvalidArgument(`invalid ${what} ${n}: a non-negative integer`);
  return n.toString(16).padStart(16, '0');
}

function parseHex16(what: string, s: string): number {
  if (!hex16Pattern.test(s)) throw ErrInvalidArgument(`invalid ${what} ${JSON.stringify(s)}: 16 lowercase hex digits`);
  const n = Number.parseInt(s, 16);
  if (!Number.isSafeInteger(n)) throw ErrInvalidArgument(`${what} ${s} is too large`);
  return n;
}

/** Which disk a key belongs to. */
export interface DiskRef {
  tenant: string;
  vm: string;
  disk: string;
}

export function tenantPrefix(tenant: string): string {
  assertValidId('tenant', tenant);
  return `tenants/${tenant}/`;
}

export function vmPrefix(tenant: string, vm: string): string {
  assertValidId('vm', vm);
  return `${tenantPrefix(tenant)}vms/${vm}/`;
}

export function diskPrefix(ref: DiskRef): string {
  assertValidId('disk', ref.disk);
  return `${vmPrefix(ref.tenant, ref.vm)}disks/${ref.disk}/`;
}

/** Prefix of a disk's logs, or of one generation's logs. */
export function logsPrefix(ref: DiskRef, generation?: number): string {
  const base = `${diskPrefix(ref)}logs/`;
  return generation === undefined ? base : `${base}${hex16('generation', generation)}/`;
}

/** tenants/<t>/vms/<vm>/disks/<d>/logs/<generation 016x>/<sequence 016x>.hrl */
export function logKey(ref: DiskRef, generation: number, sequence: number): string {
  return `${logsPrefix(ref, generation)}${hex16('sequence', sequence)}.hrl`;
}

/** Prefix of a disk's initial-replication objects, or of one generation's. */
export function initialPrefix(ref: DiskRef, generation?: number): string {
  const base = `${diskPrefix(ref)}initial/`;
  return generation === undefined ? base : `${base}${hex16('generation', generation)}/`;
}

/** tenants/<t>/vms/<vm>/disks/<d>/initial/<generation 016x>/<chunk index 016x>.chunk */
export function chunkKey(ref: DiskRef, generation: number, index: number): string {
  return `${initialPrefix(ref, generation)}${hex16('chunk index', index)}.chunk`;
}

/** tenants/<t>/vms/<vm>/disks/<d>/initial/<generation 016x>/manifest.json: written after every chunk. */
export function manifestKey(ref: DiskRef, generation: number): string {
  return `${initialPrefix(ref, generation)}manifest.json`;
}

/**
 * The tenant's reverse prefix (docs/reverse.md): logs of what a failed-over VM wrote at the hoster,
 * sealed to the VM's agent. tenants/<t>/reverse/vms/<vm>/disks/<d>/, and one generation's.
 */
export function reversePrefix(ref: DiskRef, generation?: number): string {
  assertValidId('vm', ref.vm);
  assertValidId('disk', ref.disk);
  const base = `${tenantPrefix(ref.tenant)}reverse/vms/${ref.vm}/disks/${ref.disk}/logs/`;
  return generation === undefined ? base : `${base}${hex16('generation', generation)}/`;
}

/** tenants/<t>/reverse/vms/<vm>/disks/<d>/logs/<generation 016x>/<sequence 016x>.hrl */
export function reverseLogKey(ref: DiskRef, generation: number, sequence: number): string {
  return `${reversePrefix(ref, generation)}${hex16('sequence', sequence)}.hrl`;
}

export type ParsedKey =
  | (DiskRef & { kind: 'log'; generation: number; sequence: number })
  | (DiskRef & { kind: 'reverse-log'; generation: number; sequence: number })
  | (DiskRef & { kind: 'chunk'; generation: number; index: number })
  | (DiskRef & { kind: 'manifest'; generation: number });

/** The meaning of a key built by this module; anything else is 'invalid_argument'. */
export function parseKey(key: string): ParsedKey {
  assertValidKey(key);
  const p = key.split('/');
  if (p.length === 10 && p[0] === 'tenants' && p[2] === 'reverse' && p[3] === 'vms' && p[5] === 'disks' && p[7] === 'logs' && p[9]!.endsWith('.hrl')) {
    const [, tenant, , , vm, , disk, , gen, name] = p as [string, string, string, string, string, string, string, string, string, string];
    assertValidId('tenant', tenant);
    assertValidId('vm', vm);
    assertValidId('disk', disk);
    return { kind: 'reverse-log', tenant, vm, disk, generation: parseHex16('generation', gen), sequence: parseHex16('sequence', name.slice(0, -4)) };
  }
  if (p.length !== 9 || p[0] !== 'tenants' || p[2] !== 'vms' || p[4] !== 'disks') {
    throw ErrInvalidArgument(`not a lifeboat object key: ${key}`);
  }
  const [, tenant, , vm, , disk, area, gen, name] = p as [string, string, string, string, string, string, string, string, string];
  assertValidId('tenant', tenant);
  assertValidId('vm', vm);
  assertValidId('disk', disk);
  const ref = { tenant, vm, disk };
  const generation = parseHex16('generation', gen);
  if (area === 'logs' && name.endsWith('.hrl')) {
    return { kind: 'log', ...ref, generation, sequence: parseHex16('sequence', name.slice(0, -4)) };
  }
  if (area === 'initial' && name.endsWith('.chunk')) {
    return { kind: 'chunk', ...ref, generation, index: parseHex16('chunk index', name.slice(0, -6)) };
  }
  if (area === 'initial' && name === 'manifest.json') return { kind: 'manifest', ...ref, generation };
  throw ErrInvalidArgument(`not a lifeboat object key: ${key}`);
}
