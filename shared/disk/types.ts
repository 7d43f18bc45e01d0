/**
 * The one interface every virtual-disk format implements (raw, VHD, VHDX). Everything streams
 * through caller-owned buffers: nothing here reads a whole disk into memory.
 */
export type DiskFormat = 'raw' | 'vhd' | 'vhdx';

/** A byte range of the virtual disk. */
export interface Extent {
  offset: number;
  length: number;
  /** 'data': may hold non-zero bytes and must be read; 'zero': defined by the layer as zeros. */
  kind: 'data' | 'zero';
}

export interface ExtentQuery {
  /** Start of the range asked about (default 0). */
  offset?: number;
  /** Length of the range (default: to the end of the disk). */
  length?: number;
  /**
   * 'chain' (default): the ranges that may hold non-zero data, looking through parents; only
   * kind 'data' is yielded, coalesced. 'own': what this layer alone defines, data and zero,
   * for merging a child into its parent.
   */
  layer?: 'chain' | 'own';
  /**
   * False: answer from metadata alone, never by reading data. A format that finds zero ranges only
   * by reading them (raw) then reports its whole range as 'data'; for callers that read what they
   * are given and detect zeros themselves (convert, compare), so nothing is read twice. Default true.
   */
  scan?: boolean;
}

export interface DiskInfo {
  path: string;
  format: DiskFormat;
  /** 'fixed' | 'dynamic' | 'differencing' for VHD/VHDX; 'sparse' | 'fixed' for raw (by allocation). */
  subformat: string;
  virtualSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  /** Allocation unit of the format (VHDX/VHD block size); undefined for raw. */
  blockSize: number | undefined;
  /** Bytes the file occupies on its filesystem. */
  allocatedBytes: number;
  /** Paths of the parents, nearest first; empty for a disk without a parent. */
  parentChain: string[];
}

export interface DiskImage {
  readonly path: string;
  readonly format: DiskFormat;
  readonly virtualSize: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly blockSize: number | undefined;
  readonly readOnly: boolean;
  /** The opened parent of a differencing disk, closed with this one. */
  readonly parent: DiskImage | undefined;

  /** Fills buf with the virtual contents at offset (unallocated reads as zeros or the parent's). */
  read(offset: number, buf: Buffer): Promise<void>;
  /** Writes data at offset; offset and length need not be sector-aligned. */
  write(offset: number, data: Buffer): Promise<void>;
  /** Makes [offset, offset+length) read as zeros, releasing space where the format allows. */
  zero(offset: number, length: number): Promise<void>;
  /** Allocated extents in ascending order; see ExtentQuery. */
  extents(query?: ExtentQuery): AsyncIterable<Extent>;
  /** Grows the virtual size (never shrinks). */
  resize(newVirtualSize: number): Promise<void>;
  /** Makes every completed write durable; returns when it is. */
  flush(): Promise<void>;
  /** Flushes and closes this disk and its parents. */
  close(): Promise<void>;
  info(): Promise<DiskInfo>;
  /**
   * Differencing disks only (optional): points this disk at the image at parentPath, recording that
   * image's current identity (VHDX: its DataWriteGuid as parent_linkage) and its paths. Used after
   * a merge wrote into the parent (same path) or to re-parent onto the image a layer was merged into.
   */
  setParent?(parentPath: string): Promise<void>;
  /**
   * Optional (VHDX): starts writes into new blocks that nothing reads until `publish()`; until the
   * writer is published or abandoned every other change to the image waits. See FreshWriter.
   */
  freshWrites?(): Promise<FreshWriter>;
}

/**
 * Writes that change nothing the image reads until published: a merge applies a log's data as it
 * streams in and makes it visible only once the whole log verified (docs/formats/vhdx.md).
 */
export interface FreshWriter {
  /** Pieces passed to write() lie inside one block of this size. */
  readonly blockSize: number;
  /**
   * Writes the piece into a new block (true), or refuses it (false, nothing written) when its block
   * cannot take fresh writes; extent is the whole range the caller writes contiguously, of which the
   * piece is part. The caller may reuse data once the promise settles.
   */
  write(offset: number, data: Buffer, extent: { offset: number; length: number }): Promise<boolean>;
  /** Makes everything written visible (durable at the next flush) and ends the writer. */
  publish(): Promise<void>;
  /** Drops everything written and ends the writer; safe after publish. */
  abandon(): Promise<void>;
}

export interface OpenOptions {
  readOnly?: boolean;
  /**
   * Opens a differencing disk's parent (read-only). Supplied by shared/disk/index.ts so a format
   * module never imports the registry.
   */
  openParent?: (path: string) => Promise<DiskImage>;
  /**
   * Differencing disks: accept a parent found through the locator's paths even when its identity
   * no longer matches the recorded link. Only for finishing an interrupted merge (mergeChild),
   * which then calls setParent; never for reading a disk's contents.
   */
  acceptChangedParent?: boolean;
}

export interface CreateOptions {
  virtualSize: number;
  /** VHD/VHDX: 'dynamic' (default) or 'fixed'. Raw is always sparse. */
  type?: 'dynamic' | 'fixed';
  /** VHDX: 1 MiB to 256 MiB, a power of two (default 32 MiB, as Hyper-V). VHD: 2 MiB. */
  blockSize?: number;
  /** 512 or 4096 (default 512). */
  logicalSectorSize?: number;
  /** 512 or 4096 (default 4096). */
  physicalSectorSize?: number;
}

export interface CreateChildOptions {
  parentPath: string;
  blockSize?: number;
  openParent: (path: string) => Promise<DiskImage>;
}

/** One format's entry in the registry of shared/disk/index.ts. */
export interface DiskFormatDriver {
  format: DiskFormat;
  /** True when the file's first bytes (up to 64 KiB) and last 512 bytes are this format's. */
  probe(head: Buffer, tail: Buffer, fileSize: number): boolean;
  open(path: string, options: OpenOptions): Promise<DiskImage>;
  create(path: string, options: CreateOptions): Promise<DiskImage>;
  /** Formats that support differencing disks implement this. */
  createChild?(path: string, options: CreateChildOptions): Promise<DiskImage>;
}
