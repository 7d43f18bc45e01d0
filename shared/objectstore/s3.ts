/**
 * The S3 adapter (AWS S3 and compatible servers). Puts go through @aws-sdk/lib-storage's Upload: one
 * PutObject up to a part, a multipart upload beyond, visible only at completion and aborted on any
 * failure, so a put is all or nothing. Grants are SigV4 presigned URLs bound to method, key and expiry.
 * Credentials come from the SDK's default chain or the URL's query and are never logged.
 */
import type { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import type { S3ClientConfig } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { ErrInvalidArgument } from '../errors.js';
import { checkedStream, declaredLength } from './body.js';
import { checkRange, grantExpiry, servedRange } from './checks.js';
import { ErrRangeNotSatisfiable, storeError } from './errors.js';
import { assertValidKey, assertValidPrefix } from './keys.js';
import type { Body, GetOptions, Grant, GrantOptions, ListEntry, ObjectInfo, ObjectStore, PutOptions, SignalOptions } from './types.js';

/** Bodies up to one part go up as a single PutObject; S3's minimum part is 5 MiB. */
export const DefaultPartSize = 8 * 1024 * 1024;
const MinPartSize = 5 * 1024 * 1024;
const DefaultQueueSize = 4;

export interface S3StoreConfig {
  bucket: string;
  /** Key prefix without leading or trailing '/', or ''. */
  prefix: string;
  client: S3Client;
  partSize?: number;
}

/** Builds an S3 store from s3://bucket/prefix?endpoint=…&region=…&forcePathStyle=true[&accessKeyId=…&secretAccessKey=…]. */
export function openS3Store(url: URL, env: NodeJS.ProcessEnv): S3Store {
  const bucket = url.hostname;
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) throw ErrInvalidArgument(`s3 URL: invalid bucket name ${JSON.stringify(bucket)}`);
  const prefix = decodeURIComponent(url.pathname).replace(/^\/+|\/+$/g, '');
  if (prefix !== '') assertValidKey(prefix);
  const q = url.searchParams;
  const config: S3ClientConfig = {
    region: q.get('region') ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
    forcePathStyle: q.get('forcePathStyle') === 'true',
    // Without these the SDK streams uploads with aws-chunked trailing checksums, which some
    // S3-compatible servers (s3rver) store verbatim, corrupting the object.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // Retrying is withRetry's job (one policy, one budget, over every backend).
    maxAttempts: 1,
  };
  const endpoint = q.get('endpoint');
  if (endpoint !== null) config.endpoint = endpoint;
  const accessKeyId = q.get('accessKeyId') ?? (env === process.env ? undefined : env.AWS_ACCESS_KEY_ID);
  const secretAccessKey = q.get('secretAccessKey') ?? (env === process.env ? undefined : env.AWS_SECRET_ACCESS_KEY);
  if (accessKeyId && secretAccessKey) {
    const sessionToken = q.get('sessionToken') ?? undefined;
    config.credentials = { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
  }
  const partSize = q.get('partSize');
  return new S3Store({ bucket, prefix, client: new S3Client(config), partSize: partSize === null ? undefined : Number(partSize) }, endpoint);
}

export class S3Store implements ObjectStore {
  readonly location: string;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly client: S3Client;
  private readonly partSize: number;

  constructor(config: S3StoreConfig, endpoint?: string | null) {
    this.bucket = config.bucket;
    this.prefix = config.prefix === '' ? '' : `${config.prefix}/`;
    this.client = config.client;
    this.partSize = config.partSize ?? DefaultPartSize;
    if (!Number.isSafeInteger(this.partSize) || this.partSize < MinPartSize) throw ErrInvalidArgument(`s3 part size must be at least ${MinPartSize} bytes`);
    const where = endpoint ? ` at ${new URL(endpoint).origin}` : '';
    this.location = `s3://${this.bucket}/${config.prefix}${where}`;
  }

  private objectKey(key: string): string {
    assertValidKey(key);
    return this.prefix + key;
  }

  async put(key: string, body: Body, options: PutOptions = {}): Promise<void> {
    const Key = this.objectKey(key);
    try {
      options.signal?.throwIfAborted();
      const length = declaredLength(body, options.contentLength);
      const upload = new Upload({
        client: this.client,
        params: { Bucket: this.bucket, Key, Body: checkedStream(body, length, options.signal), ...(length === undefined ? {} : { ContentLength: length }) },
        partSize: this.partSize,
        queueSize: DefaultQueueSize,
        leavePartsOnError: false,
      });
      const onAbort = () => void upload.abort().catch(() => undefined);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      try {
        await upload.done();
      } finally {
        options.signal?.removeEventListener('abort', onAbort);
      }
      options.signal?.throwIfAborted();
    } catch (err) {
      throw storeError(`put ${key}`, options.signal?.aborted ? options.signal.reason : err);
    }
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const Key = this.objectKey(key);
    const range = checkRange(options.range);
    try {
      const Range = range === undefined ? undefined : `bytes=${range.offset}-${range.offset + range.length - 1}`;
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key, Range }), { abortSignal: options.signal });
      const stream = res.Body as Readable;
      // S3 answers 416 for a range past the end, but some servers serve an empty object instead.
      return servedRange(key, range, stream, res.ContentRange, res.ContentLength);
    } catch (err) {
      if (range !== undefined && (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 416) {
        throw ErrRangeNotSatisfiable(key, range.offset);
      }
      throw storeError(`get ${key}`, err);
    }
  }

  async head(key: string, options: SignalOptions = {}): Promise<ObjectInfo> {
    const Key = this.objectKey(key);
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }), { abortSignal: options.signal });
      return { size: res.ContentLength ?? 0, etag: res.ETag, lastModified: res.LastModified ?? new Date(0) };
    } catch (err) {
      throw storeError(`head ${key}`, err);
    }
  }

  /**
   * ListObjects (v1) paged with Marker = the last key seen: the same walk as v2's continuation
   * tokens on S3, and it also works on servers whose v2 tokens are broken (s3rver on OpenSSL 3).
   */
  async *list(prefix: string, options: SignalOptions = {}): AsyncIterable<ListEntry> {
    assertValidPrefix(prefix);
    let marker: string | undefined;
    for (;;) {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsCommand({ Bucket: this.bucket, Prefix: this.prefix + prefix, Marker: marker }),
          { abortSignal: options.signal },
        );
      } catch (err) {
        throw storeError(`list ${prefix}`, err);
      }
      const contents = page.Contents ?? [];
      for (const o of contents) {
        if (o.Key === undefined || !o.Key.startsWith(this.prefix)) continue;
        yield { key: o.Key.slice(this.prefix.length), size: o.Size ?? 0, lastModified: o.LastModified ?? new Date(0) };
      }
      const last = contents.at(-1)?.Key;
      if (!page.IsTruncated || last === undefined) return;
      marker = last;
    }
  }

  async delete(key: string, options: SignalOptions = {}): Promise<void> {
    const Key = this.objectKey(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key }), { abortSignal: options.signal });
    } catch (err) {
      const mapped = storeError(`delete ${key}`, err);
      if ((mapped as { code?: string }).code !== 'not_found') throw mapped;
    }
  }

  async grant(key: string, options: GrantOptions): Promise<Grant> {
    const Key = this.objectKey(key);
    const expiresAt = grantExpiry(options);
    const signingDate = new Date(expiresAt.getTime() - options.expiresIn * 1000);
    const command = options.operation === 'put'
      ? new PutObjectCommand({ Bucket: this.bucket, Key })
      : new GetObjectCommand({ Bucket: this.bucket, Key });
    try {
      const url = await getSignedUrl(this.client, command, { expiresIn: options.expiresIn, signingDate });
      return { url, method: options.operation === 'put' ? 'PUT' : 'GET', headers: {}, expiresAt };
    } catch (err) {
      throw storeError(`grant ${key}`, err);
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
