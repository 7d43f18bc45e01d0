/**
 * `init`: a data directory with embedded defaults — the configuration file, the service CA, the
 * signing key, the master key that wraps tenants' replica keys, and an operator API token. Secrets
 * are written with mode 0600. Refuses to touch a directory that already has a configuration.
 */
import { randomBytes } from 'node:crypto';
import { access, mkdir, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { ErrInvalidArgument, LifeboatError } from '../../shared/errors.js';
import { checkObjectStoreUrl } from '../../shared/objectstore/index.js';
import { createCa } from '../trust/ca.js';
import { loadSigner, newSigningJwk, signApiToken } from '../trust/tokens.js';
import type { ConfigFile } from './config.js';
import { ConfigFileName, configSchema, DefaultAgentPort, DefaultApiPort, DefaultApiRateLimitPerMinute, DefaultCertValidityDays, DefaultGrantSeconds, DefaultRedisDir, parseConfig } from './config.js';

/** The operator token made at init lives long; rotate it by re-running init on a new directory. */
export const AdminTokenSeconds = 10 * 365 * 86_400;

export interface InitOptions {
  dataDir: string;
  objectStore?: string | undefined;
  /** Public host name of the service for agents (default: this machine's host name). */
  publicHost?: string | undefined;
}

export interface InitResult {
  configPath: string;
  made: { what: string; path: string }[];
}

/** A DNS name (labels of letters, digits and inner hyphens) or an IP address; anything else is one line naming where it came from. */
function checkPublicHost(host: string, given: boolean): string {
  const label = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
  if (isIP(host) || (host.length <= 253 && host.split('.').every((l) => label.test(l)))) return host;
  throw ErrInvalidArgument(given ? `--public-host ${JSON.stringify(host)} is not a host name or IP address`
    : `this machine's host name ${JSON.stringify(host)} is not one agents can use; give --public-host NAME`);
}

export async function initDataDir(options: InitOptions): Promise<InitResult> {
  const dir = resolve(options.dataDir);
  const configPath = join(dir, ConfigFileName);
  if (await exists(configPath)) throw new LifeboatError('already_exists', `${configPath} already exists; init makes a new data directory and never overwrites one`);
  const host = checkPublicHost((options.publicHost ?? hostname()).toLowerCase(), options.publicHost !== undefined);
  if (options.objectStore !== undefined) checkObjectStoreUrl(options.objectStore);
  const serverNames = [...new Set([host, 'localhost', '127.0.0.1'])];
  const file: ConfigFile = {
    version: 1,
    catalog: { kind: 'pglite', dir: 'catalog' },
    // No URL: serve runs a private redis-server (socket and append-only file in redis.dir).
    redis: { dir: DefaultRedisDir },
    objectStore: { url: options.objectStore ?? 'file:objects' },
    replicaRoot: 'replicas',
    api: { host: '127.0.0.1', port: DefaultApiPort, rateLimitPerMinute: DefaultApiRateLimitPerMinute },
    agentEndpoint: { host: '0.0.0.0', port: DefaultAgentPort, serverNames, publicUrl: `https://${isIP(host) === 6 ? `[${host}]` : host}:${DefaultAgentPort}` },
    trust: { caKeyFile: 'keys/ca.key', caCertFile: 'keys/ca.crt', signingKeyFile: 'keys/signing.jwk', masterKeyFile: 'keys/master.key', certValidityDays: DefaultCertValidityDays },
    adminTokenFile: 'keys/admin.token',
    grantSeconds: DefaultGrantSeconds,
    replicaFormat: 'vhdx',
    mergeSweepMs: 5000,
    embeddedWorkers: true,
    logLevel: 'info',
    webhooks: { allowPrivateTargets: false },
    failover: configSchema.shape.failover.parse({}),
  };
  parseConfig(file, configPath);

  const made: InitResult['made'] = [];
  for (const sub of ['keys', 'catalog', 'replicas', ...(options.objectStore ? [] : ['objects'])]) {
    await mkdir(join(dir, sub), { recursive: true, mode: sub === 'keys' ? 0o700 : 0o755 });
  }
  const secret = async (rel: string, data: string, what: string) => {
    await writeFile(join(dir, rel), data, { mode: 0o600, flag: 'wx' });
    made.push({ what, path: join(dir, rel) });
  };
  const ca = await createCa(`lifeboat service CA (${host})`);
  await secret(file.trust.caKeyFile, ca.keyPem, 'service CA key (EC P-256)');
  await writeFile(join(dir, file.trust.caCertFile), ca.certPem, { mode: 0o644, flag: 'wx' });
  made.push({ what: 'service CA certificate (10 years)', path: join(dir, file.trust.caCertFile) });
  const jwk = await newSigningJwk();
  await secret(file.trust.signingKeyFile, `${JSON.stringify(jwk)}\n`, 'token signing key (ES256 JWK)');
  await secret(file.trust.masterKeyFile, `${randomBytes(32).toString('base64')}\n`, 'master key wrapping tenants\' replica keys');
  const admin = await signApiToken(await loadSigner(jwk), { role: 'hoster-admin', sub: 'admin' }, AdminTokenSeconds);
  await secret(file.adminTokenFile, `${admin}\n`, 'operator API token (role hoster-admin)');
  await writeFile(configPath, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  made.unshift({ what: 'configuration', path: configPath });
  made.push({ what: 'catalog (PGlite, created at first serve)', path: join(dir, 'catalog') });
  made.push({ what: 'private Redis (socket and append-only file, started by serve; needs redis-server)', path: join(dir, file.redis.dir) });
  made.push({ what: 'replica root', path: join(dir, 'replicas') });
  if (!options.objectStore) made.push({ what: 'object store (file)', path: join(dir, 'objects') });
  return { configPath, made };
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
