/**
 * A read-only DiskImage over an NBD export, so the engine reads a qemu source's point-in-time view the
 * way it reads a file: a base's sealing threads, the log writer and the registration see the view's
 * size, its bytes and its allocation. The view is named by an NBD URI (`nbd+unix:///EXPORT?socket=PATH`,
 * the form nbdinfo and qemu-img take), which crosses to the sealing threads as a path would; each
 * opener gets a connection of its own (qemu's NBD server takes several clients of one export).
 *
 * Input: the URI. Output: reads (in READs of at most 4 MiB, sent together) and extents from
 * `base:allocation` (a range with NBD_STATE_ZERO is a 'zero' extent; a hole without it is data). Failure: writes are refused as on a
 * read-only file ('read_only'); a view ended under a reader fails its reads ('unavailable' or 'io').
 */
import { LifeboatError } from '../errors.js';
import type { DiskImage, DiskInfo, Extent, ExtentQuery } from '../disk/index.js';
import { openDisk } from '../disk/index.js';
import { NbdClient } from '../nbd/client.js';
import { BaseAllocation, NBD_STATE_ZERO } from '../nbd/protocol.js';

/** Bytes in one READ. */
const ReadSlice = 4 << 20;
const NbdUriPrefix = 'nbd+unix:///';

/** The URI of export on the unix socket (the export name and the socket path URI-encoded). */
export function nbdUri(socket: string, exportName: string): string {
  return `${NbdUriPrefix}${encodeURIComponent(exportName)}?socket=${encodeURIComponent(socket)}`;
}

export function isNbdUri(path: string): boolean {
  return path.startsWith(NbdUriPrefix);
}

function parseNbdUri(uri: string): { socket: string; exportName: string } {
  const u = new URL(uri);
  const socket = u.searchParams.get('socket');
  if (!socket) throw new LifeboatError('invalid_argument', `${uri}: an NBD URI needs ?socket=PATH`);
  return { socket, exportName: decodeURIComponent(u.pathname.slice(1)) };
}

/** Opens a disk by path, or an NBD view by its URI; read-only either way. */
export function openSourceDisk(path: string): Promise<DiskImage> {
  return isNbdUri(path) ? NbdDisk.open(path) : openDisk(path, { readOnly: true });
}

export class NbdDisk implements DiskImage {
  readonly format = 'raw' as const;
  readonly logicalSectorSize = 512;
  readonly physicalSectorSize = 512;
  readonly blockSize = undefined;
  readonly readOnly = true;
  readonly parent = undefined;

  private closed = false;
  private constructor(readonly path: string, private readonly nbd: NbdClient) {}

  static async open(uri: string): Promise<NbdDisk> {
    const { socket, exportName } = parseNbdUri(uri);
    return new NbdDisk(uri, await NbdClient.connect({ socketPath: socket, exportName, metaContexts: [BaseAllocation] }));
  }

  get virtualSize(): number { return this.nbd.size; }
  /** Bytes READ through this connection. */
  get bytesRead(): number { return this.nbd.bytesRead; }

  async read(offset: number, buf: Buffer): Promise<void> {
    const parts: Promise<void>[] = [];
    for (let at = 0; at < buf.length; at += ReadSlice) {
      const length = Math.min(ReadSlice, buf.length - at);
      parts.push(this.nbd.read(offset + at, length).then((b) => { b.copy(buf, at); }));
    }
    await Promise.all(parts);
  }

  async *extents(query: ExtentQuery = {}): AsyncGenerator<Extent> {
    const offset = query.offset ?? 0;
    const length = query.length ?? this.virtualSize - offset;
    if (length <= 0) return;
    const own = query.layer === 'own';
    let pending: Extent | undefined;
    for await (const e of this.nbd.map(BaseAllocation, offset, length)) {
      // Zero only where the server says it reads as zeros; a hole alone may still read as data.
      const kind = (e.flags & NBD_STATE_ZERO) !== 0 ? 'zero' : 'data';
      if (kind === 'zero' && !own) continue;
      if (pending && pending.kind === kind && pending.offset + pending.length === e.offset) { pending.length += e.length; continue; }
      if (pending) yield pending;
      pending = { offset: e.offset, length: e.length, kind };
    }
    if (pending) yield pending;
  }

  write(): Promise<void> { return this.refuse(); }
  zero(): Promise<void> { return this.refuse(); }
  resize(): Promise<void> { return this.refuse(); }
  async flush(): Promise<void> {}

  /** Disconnects; idempotent, and quiet when the view already ended under it. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.nbd.close().catch(() => undefined);
  }

  async info(): Promise<DiskInfo> {
    return {
      path: this.path, format: 'raw', subformat: 'nbd', virtualSize: this.virtualSize, logicalSectorSize: 512, physicalSectorSize: 512,
      blockSize: undefined, allocatedBytes: 0, parentChain: [],
    };
  }

  private refuse(): Promise<never> {
    return Promise.reject(new LifeboatError('forbidden', `${this.path}: a point-in-time view is read-only`));
  }
}
