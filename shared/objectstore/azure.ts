/**
 * The Azure Blob adapter. A put stages the body as blocks and commits the block list at the end (a
 * body that fits one block is a single Put Blob), so a blob changes only at commit: all or nothing.
 * Grants are service SAS URLs for the one blob, signed with the account key. Credentials come from
 * AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY or the URL's query and are never logged.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { BlobSASPermissions, BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import type { ContainerClient, StoragePipelineOptions } from '@azure/storage-blob';
import { ErrInvalidArgument } from '../errors.js';
import { checkedStream, rechunk } from './body.js';
import { checkRange, grantExpiry, servedRange } from './checks.js';
import { ErrRangeNotSatisfiable, storeError } from './errors.js';
import { assertValidKey, assertValidPrefix } from './keys.js';
import type { Body, GetOptions, Grant, GrantOptions, ListEntry, ObjectInfo, ObjectStore, PutOptions, SignalOptions } from './types.js';

export const DefaultBlockSize = 4 * 1024 * 1024;
const MaxStagingInFlight = 4;
const DefaultListPageSize = 5000;

/** Builds an Azure store from azure://account/container/prefix[?endpoint=…&accountKey=…|connectionString=…&listPageSize=…]. */
export function openAzureStore(url: URL, env: NodeJS.ProcessEnv): AzureStore {
  const account = url.hostname;
  const [container = '', ...rest] = decodeURIComponent(url.pathname).replace(/^\/+|\/+$/g, '').split('/');
  if (!/^[a-z0-9]{3,24}$/.test(account)) throw ErrInvalidArgument(`azure URL: invalid account name ${JSON.stringify(account)}`);
  if (!/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/.test(container)) throw ErrInvalidArgument(`azure URL: invalid container name ${JSON.stringify(container)}`);
  const prefix = rest.join('/');
  if (prefix !== '') assertValidKey(prefix);
  const q = url.searchParams;
  // Retrying is withRetry's job (one policy, one budget, over every backend).
  const pipeline: StoragePipelineOptions = { retryOptions: { maxTries: 1 } };
  const endpoint = q.get('endpoint') ?? `https://${account}.blob.core.windows.net`;
  const connectionString = q.get('connectionString') ?? (q.get('accountKey') === null ? env.AZURE_STORAGE_CONNECTION_STRING : undefined);
  let service: BlobServiceClient;
  if (connectionString) {
    service = BlobServiceClient.fromConnectionString(connectionString, pipeline);
  } else {
    const key = q.get('accountKey') ?? env.AZURE_STORAGE_KEY ?? env.AZURE_STORAGE_ACCOUNT_KEY;
    if (!key) throw ErrInvalidArgument(`azure://${account}: no credentials (set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_KEY)`);
    service = new BlobServiceClient(endpoint, new StorageSharedKeyCredential(account, key), pipeline);
  }
  const location = `azure://${account}/${container}/${prefix}${q.has('endpoint') ? ` at ${new URL(endpoint).origin}` : ''}`;
  const listPageSize = Number(q.get('listPageSize') ?? DefaultListPageSize);
  if (!Number.isInteger(listPageSize) || listPageSize < 1 || listPageSize > DefaultListPageSize) throw ErrInvalidArgument(`azure URL: listPageSize must be 1 to ${DefaultListPageSize}`);
  return new AzureStore(service.getContainerClient(container), prefix, location, { listPageSize });
}

export class AzureStore implements ObjectStore {
  private readonly prefix: string;

  private readonly blockSize: number;
  private readonly listPageSize: number;

  constructor(private readonly container: ContainerClient, prefix: string, readonly location: string, options: { blockSize?: number; listPageSize?: number } = {}) {
    this.prefix = prefix === '' ? '' : `${prefix}/`;
    this.blockSize = options.blockSize ?? DefaultBlockSize;
    this.listPageSize = options.listPageSize ?? DefaultListPageSize;
  }

  private blob(key: string) {
    assertValidKey(key);
    return this.container.getBlockBlobClient(this.prefix + key);
  }

  async put(key: string, body: Body, options: PutOptions = {}): Promise<void> {
    const blob = this.blob(key);
    const abortSignal = options.signal;
    try {
      abortSignal?.throwIfAborted();
      const blocks = rechunk(checkedStream(body, options.contentLength, abortSignal), this.blockSize)[Symbol.asyncIterator]();
      const first = await blocks.next();
      const firstBlock = first.done ? Buffer.alloc(0) : first.value;
      if (firstBlock.length < this.blockSize) {
        // Fits one block (the rechunker yields a short block only last): one atomic Put Blob.
        await blob.upload(firstBlock, firstBlock.length, { abortSignal });
        return;
      }
      const run = randomBytes(8).toString('hex');
      const ids: string[] = [];
      const inFlight: Promise<unknown>[] = [];
      const stage = async (data: Buffer) => {
        const id = Buffer.from(`${run}-${ids.length.toString().padStart(8, '0')}`).toString('base64');
        ids.push(id);
        const staged = blob.stageBlock(id, data, data.length, { abortSignal });
        staged.catch(() => undefined); // awaited below; this only keeps an early failure from being "unhandled"
        inFlight.push(staged);
        if (inFlight.length >= MaxStagingInFlight) await inFlight.shift();
      };
      let sourceError: unknown;
      try {
        await stage(firstBlock);
        for (let next = await blocks.next(); !next.done; next = await blocks.next()) await stage(next.value);
      } catch (err) {
        sourceError = err;
      }
      // Every staged block settles before the put answers, so nothing is in flight after a failure.
      const failed = (await Promise.allSettled(inFlight)).find((r) => r.status === 'rejected');
      if (sourceError !== undefined) throw sourceError;
      if (failed) throw (failed as PromiseRejectedResult).reason;
      abortSignal?.throwIfAborted();
      await blob.commitBlockList(ids, { abortSignal });
    } catch (err) {
      throw storeError(`put ${key}`, abortSignal?.aborted ? abortSignal.reason : err);
    }
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const blob = this.blob(key);
    const range = checkRange(options.range);
    try {
      const res = await blob.download(range?.offset ?? 0, range?.length, { abortSignal: options.signal, maxRetryRequests: 0 });
      return servedRange(key, range, res.readableStreamBody as Readable, res.contentRange, res.contentLength);
    } catch (err) {
      if (range !== undefined && (err as { statusCode?: number }).statusCode === 416) throw ErrRangeNotSatisfiable(key, range.offset);
      throw storeError(`get ${key}`, err);
    }
  }

  async head(key: string, options: SignalOptions = {}): Promise<ObjectInfo> {
    const blob = this.blob(key);
    try {
      const p = await blob.getProperties({ abortSignal: options.signal });
      return { size: p.contentLength ?? 0, etag: p.etag, lastModified: p.lastModified ?? new Date(0) };
    } catch (err) {
      throw storeError(`head ${key}`, err);
    }
  }

  async *list(prefix: string, options: SignalOptions = {}): AsyncIterable<ListEntry> {
    assertValidPrefix(prefix);
    const pages = this.container.listBlobsFlat({ prefix: this.prefix + prefix, abortSignal: options.signal }).byPage({ maxPageSize: this.listPageSize });
    for (;;) {
      let page;
      try {
        page = await pages.next();
      } catch (err) {
        throw storeError(`list ${prefix}`, err);
      }
      if (page.done) return;
      for (const b of page.value.segment.blobItems) {
        if (!b.name.startsWith(this.prefix)) continue;
        yield { key: b.name.slice(this.prefix.length), size: b.properties.contentLength ?? 0, lastModified: b.properties.lastModified };
      }
    }
  }

  async delete(key: string, options: SignalOptions = {}): Promise<void> {
    const blob = this.blob(key);
    try {
      await blob.deleteIfExists({ abortSignal: options.signal });
    } catch (err) {
      throw storeError(`delete ${key}`, err);
    }
  }

  async grant(key: string, options: GrantOptions): Promise<Grant> {
    const blob = this.blob(key);
    const expiresOn = grantExpiry(options);
    const startsOn = new Date(expiresOn.getTime() - options.expiresIn * 1000);
    const permissions = BlobSASPermissions.parse(options.operation === 'put' ? 'cw' : 'r');
    try {
      const url = await blob.generateSasUrl({ permissions, startsOn, expiresOn });
      return options.operation === 'put'
        ? { url, method: 'PUT', headers: { 'x-ms-blob-type': 'BlockBlob' }, expiresAt: expiresOn }
        : { url, method: 'GET', headers: {}, expiresAt: expiresOn };
    } catch (err) {
      throw storeError(`grant ${key}`, err);
    }
  }

  async close(): Promise<void> {}
}
