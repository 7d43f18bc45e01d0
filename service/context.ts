/**
 * What every part of a running service shares: its configuration, the catalog, the CA, the signing
 * key, the master key, the object store and the logger. Opened once per process, closed at exit.
 */
import { hkdfSync } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { JWK } from 'jose';
import pino from 'pino';
import type { Logger } from 'pino';
import { openObjectStore } from '../shared/objectstore/index.js';
import type { ObjectStore } from '../shared/objectstore/index.js';
import { wrap } from '../shared/errors.js';
import type { Db } from './catalog/db.js';
import { openCatalog } from './catalog/db.js';
import type { Config } from './config/config.js';
import type { Metrics } from './metrics.js';
import { createMetrics } from './metrics.js';
import type { ServiceCa } from './trust/ca.js';
import { loadCa } from './trust/ca.js';
import type { Signer } from './trust/tokens.js';
import { loadSigner } from './trust/tokens.js';

/** Route on the agent endpoint that serves file-store grants (docs/formats/agent-protocol.md §7.2). */
export const FileGrantPath = '/v1/objects';

export interface ServiceContext {
  config: Config;
  db: Db;
  ca: ServiceCa;
  signer: Signer;
  /** Wraps tenants' replica private keys. */
  masterKey: Buffer;
  /** HMAC key of file-store grants, derived from the master key. */
  fileGrantKey: Buffer;
  store: ObjectStore;
  log: Logger;
  metrics: Metrics;
  close(): Promise<void>;
}

export interface KeyMaterial {
  ca: ServiceCa;
  signer: Signer;
  masterKey: Buffer;
}

/** Reads the CA, signing key and master key the config names. */
export async function loadKeys(config: Config): Promise<KeyMaterial> {
  try {
    const [caKey, caCert, jwk, master] = await Promise.all([
      readFile(config.trust.caKeyFile, 'utf8'), readFile(config.trust.caCertFile, 'utf8'),
      readFile(config.trust.signingKeyFile, 'utf8'), readFile(config.trust.masterKeyFile, 'utf8'),
    ]);
    const masterKey = Buffer.from(master.trim(), 'base64');
    if (masterKey.length !== 32) throw new Error(`${config.trust.masterKeyFile}: master key must be 32 bytes (base64)`);
    return { ca: await loadCa(caKey, caCert), signer: await loadSigner(JSON.parse(jwk) as JWK), masterKey };
  } catch (err) {
    throw wrap('load service keys', err);
  }
}

export async function openContext(config: Config, options: { log?: Logger } = {}): Promise<ServiceContext> {
  const log = options.log ?? pino({ level: config.logLevel, base: { service: 'lifeboat' } });
  const keys = await loadKeys(config);
  const fileGrantKey = Buffer.from(hkdfSync('sha256', keys.masterKey, Buffer.alloc(0), 'lifeboat file grants v1', 32));
  const store = await openObjectStore(config.objectStore.url, { grant: { grantBaseUrl: `${config.agentEndpoint.publicUrl}${FileGrantPath}`, signingKey: fileGrantKey } });
  const db = await openCatalog(config.catalog);
  return {
    config, db, ...keys, fileGrantKey, store, log, metrics: createMetrics(),
    async close() {
      await store.close();
      await db.close();
    },
  };
}
