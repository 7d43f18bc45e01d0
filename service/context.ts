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
import { loadCa, previousCaKeyFile } from './trust/ca.js';
import type { Signer } from './trust/tokens.js';
import { loadSigner, previousVerifier } from './trust/tokens.js';
import { MasterKeys } from './trust/master.js';
import { livePreviousKeys } from './catalog/keys.js';

/** Route on the agent endpoint that serves file-store grants (docs/formats/agent-protocol.md §7.2). */
export const FileGrantPath = '/v1/objects';

export interface ServiceContext {
  config: Config;
  db: Db;
  ca: ServiceCa;
  signer: Signer;
  /** The previous CAs still trusted for agents' client certificates (docs/security.md, rotating the CA). */
  previousCas: PreviousCa[];
  /** The master key ring: wraps tenants' replica private keys and webhook secrets. */
  master: MasterKeys;
  /** Called after the keys changed (a rotation here or seen from another process): the agent endpoint's TLS. */
  keyListeners: Set<() => Promise<void>>;
  /** The current master key (master.current). */
  readonly masterKey: Buffer;
  /** HMAC key of file-store grants, derived from the master key. */
  fileGrantKey: Buffer;
  store: ObjectStore;
  log: Logger;
  metrics: Metrics;
  close(): Promise<void>;
}

export interface PreviousCa {
  id: string;
  certPem: string;
  /** With its key (keys/ca.key.previous) while kept: it issues the agent endpoint's certificate during the overlap. */
  ca: ServiceCa | undefined;
  until: Date;
}

/** The previous CA with its key, when the key file is there and is that CA's. */
async function previousCaWithKey(config: Config, certPem: string): Promise<ServiceCa | undefined> {
  const keyPem = await readFile(previousCaKeyFile(config.trust.caKeyFile), 'utf8').catch(() => undefined);
  if (keyPem === undefined) return undefined;
  return loadCa(keyPem, certPem).catch(() => undefined);
}

export interface KeyMaterial {
  ca: ServiceCa;
  signer: Signer;
  master: MasterKeys;
}

/** Reads the CA, signing key and master key ring the config names. */
export async function loadKeys(config: Config): Promise<KeyMaterial> {
  try {
    const [caKey, caCert, jwk, master] = await Promise.all([
      readFile(config.trust.caKeyFile, 'utf8'), readFile(config.trust.caCertFile, 'utf8'),
      readFile(config.trust.signingKeyFile, 'utf8'), MasterKeys.load(config.trust.masterKeyFile),
    ]);
    return { ca: await loadCa(caKey, caCert), signer: await loadSigner(JSON.parse(jwk) as JWK), master };
  } catch (err) {
    throw wrap('load service keys', err);
  }
}

/** How often a process reads its keys again when it meets one it does not know. */
const RefreshEveryMs = 5_000;

/**
 * Reads the key files and the previous keys still in their overlap again, into ctx: a process
 * picks up a rotation made by another (`keys rotate` through another serve, a worker beside it).
 */
export async function refreshKeys(ctx: ServiceContext): Promise<void> {
  const [keys, signing, cas] = await Promise.all([loadKeys(ctx.config), livePreviousKeys(ctx.db, 'signing'), livePreviousKeys(ctx.db, 'ca')]);
  ctx.ca = keys.ca;
  // In place: a verification under way holds this object, and its refresh must show it the new keys.
  Object.assign(ctx.signer, keys.signer, { previous: await Promise.all(signing.map((k) => previousVerifier(k.id, JSON.parse(k.material) as JWK, k.retireAfter))) });
  ctx.previousCas = await Promise.all(cas.map(async (k) => ({ id: k.id, certPem: k.material, ca: await previousCaWithKey(ctx.config, k.material), until: k.retireAfter })));
  ctx.master.current = keys.master.current;
  ctx.master.previous = keys.master.previous;
  for (const listener of ctx.keyListeners) await listener();
}

/** signer.refresh for ctx: refreshKeys at most once every few seconds. */
function refresher(ctx: ServiceContext): () => Promise<void> {
  let last = 0;
  return async () => {
    if (Date.now() - last < RefreshEveryMs) return;
    last = Date.now();
    await refreshKeys(ctx);
  };
}

export async function openContext(config: Config, options: { log?: Logger } = {}): Promise<ServiceContext> {
  const log = options.log ?? pino({ level: config.logLevel, base: { service: 'lifeboat' } });
  const keys = await loadKeys(config);
  // Grants are signed and checked by the process that made them, within minutes: the master key at
  // its start is enough, and a grant refused after a rotation is asked for again by the agent.
  const fileGrantKey = Buffer.from(hkdfSync('sha256', keys.master.current, Buffer.alloc(0), 'lifeboat file grants v1', 32));
  const store = await openObjectStore(config.objectStore.url, { grant: { grantBaseUrl: `${config.agentEndpoint.publicUrl}${FileGrantPath}`, signingKey: fileGrantKey } });
  const db = await openCatalog(config.catalog);
  const { master } = keys;
  const ctx: ServiceContext = {
    config, db, ...keys, previousCas: [], keyListeners: new Set(), fileGrantKey, store, log, metrics: createMetrics(),
    get masterKey() {
      return master.current;
    },
    async close() {
      await store.close();
      await db.close();
    },
  };
  await refreshKeys(ctx);
  ctx.signer.refresh = refresher(ctx);
  return ctx;
}
