/**
 * openObjectStore: the one factory that picks an adapter by URL scheme. Credentials in the URL's
 * query (s3 accessKeyId/secretAccessKey, azure accountKey/sas) are accepted but the environment is
 * preferred; store.location never contains them.
 */
import { fileURLToPath } from 'node:url';
import { ErrInvalidArgument, ErrUnsupported } from '../errors.js';
import type { FileGrantConfig } from './file-grant.js';
import { FileStore } from './file.js';
import type { ObjectStore } from './types.js';

export type { Body, BodyFactory, ByteRange, Grant, GrantOperation, GrantOptions, ListEntry, ObjectInfo, ObjectStore, PutOptions, GetOptions } from './types.js';
export { MaxGrantSeconds } from './types.js';
export * from './keys.js';
export { fileGrantHandler, signFileGrant, verifyFileGrant } from './file-grant.js';
export type { FileGrantConfig } from './file-grant.js';
export { isRetryable } from './errors.js';
export { readAll } from './body.js';
/**
 * Hands back a chunk of a body from get() once every byte of it was used: the file store reads later
 * bodies into it. Chunks of other stores, and pieces of chunks, are ignored.
 */
export { giveWholePooled as recycleBodyChunk } from '../buffer-pool.js';
export * from './wrappers/index.js';

export interface OpenObjectStoreOptions {
  /** file:// stores: where the service serves grants and the HMAC key for them. */
  grant?: FileGrantConfig;
  /** Environment to read credentials from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** The URL parsed, refused in one line when it is not a URL or names a scheme no store has; opens nothing. */
export function checkObjectStoreUrl(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw ErrInvalidArgument(`invalid object store URL ${JSON.stringify(redactUrl(url))}`);
  }
  if (!['file:', 's3:', 'azure:'].includes(parsed.protocol)) throw ErrUnsupported(`object store URL scheme ${parsed.protocol} is not supported (file:, s3:, azure:)`);
  return parsed;
}

export async function openObjectStore(url: string, options: OpenObjectStoreOptions = {}): Promise<ObjectStore> {
  const parsed = checkObjectStoreUrl(url);
  switch (parsed.protocol) {
    case 'file:':
      return new FileStore(fileURLToPath(parsed), { grant: options.grant });
    case 's3:': {
      const { openS3Store } = await import('./s3.js');
      return openS3Store(parsed, options.env ?? process.env);
    }
    case 'azure:': {
      const { openAzureStore } = await import('./azure.js');
      return openAzureStore(parsed, options.env ?? process.env);
    }
    default:
      throw ErrUnsupported(`object store URL scheme ${parsed.protocol} is not supported (file:, s3:, azure:)`);
  }
}

/** A URL with its query string and user info removed, for messages and logs. */
export function redactUrl(url: string): string {
  const q = url.search(/[?#]/);
  const bare = q < 0 ? url : url.slice(0, q);
  return bare.replace(/\/\/[^/@]*@/, '//');
}
