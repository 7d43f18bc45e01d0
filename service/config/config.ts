/**
 * The service's configuration file (lifeboat.json): its schema, where it is found, and loading it.
 * Relative paths in the file are relative to the file's directory, so a data directory can move.
 * A file that does not parse or validate is a user's mistake: one clear line naming the field.
 */
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { z } from 'zod';
import { ErrInvalidArgument, LifeboatError } from '../../shared/errors.js';

export const ConfigFileName = 'lifeboat.json';
export const DefaultApiPort = 8080;
export const DefaultAgentPort = 9443;
/** Where the private Redis keeps its socket and append-only file, relative to the config. */
export const DefaultRedisDir = 'redis';
export const DefaultApiRateLimitPerMinute = 1200;
export const DefaultCertValidityDays = 30;
export const DefaultGrantSeconds = 15 * 60;
export const MaxConfigBytes = 1 << 20;

const port = z.number().int().min(0).max(65535);

export const configSchema = z.strictObject({
  version: z.literal(1),
  catalog: z.discriminatedUnion('kind', [
    z.strictObject({ kind: z.literal('pglite'), dir: z.string().min(1) }),
    z.strictObject({ kind: z.literal('postgres'), url: z.string().min(1), schema: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/).optional() }),
  ]),
  /**
   * Redis for queues and locks. url: the hoster's Redis (REDIS_URL overrides). Without one, `serve`
   * runs a private redis-server with its unix socket and append-only file in dir (docs/service.md).
   */
  redis: z.strictObject({ url: z.string().min(1).optional(), dir: z.string().min(1).default(DefaultRedisDir) }).prefault({}),
  objectStore: z.strictObject({ url: z.string().min(1) }),
  /** Where replicas go when an authorization entry names no storage of its own. */
  replicaRoot: z.string().min(1),
  api: z.strictObject({
    host: z.string().min(1),
    port,
    /** Requests per minute per API key, counted in Redis; 0: no limit (docs/api.md, Rate limits). */
    rateLimitPerMinute: z.number().int().min(0).max(1_000_000).default(DefaultApiRateLimitPerMinute),
  }),
  agentEndpoint: z.strictObject({
    host: z.string().min(1),
    port,
    /** DNS names and IP addresses the agent endpoint's server certificate carries. */
    serverNames: z.array(z.string().min(1).max(253)).min(1).max(32),
    /** The URL agents are told to use (in enrollment tokens and upload grants). */
    publicUrl: z.string().url(),
  }),
  trust: z.strictObject({
    caKeyFile: z.string().min(1),
    caCertFile: z.string().min(1),
    /** Private JWK (ES256) that signs enrollment tokens, operator tokens and upload grants. */
    signingKeyFile: z.string().min(1),
    /** 32 random bytes (base64) that wrap tenants' replica private keys in the catalog. */
    masterKeyFile: z.string().min(1),
    certValidityDays: z.number().int().min(1).max(825),
  }),
  /** The operator API token the CLI uses to talk to the running service. */
  adminTokenFile: z.string().min(1),
  grantSeconds: z.number().int().min(60).max(7 * 24 * 3600),
  /** Format of replica layers: dynamic VHDX (default), or raw without recovery-point chains. */
  replicaFormat: z.enum(['vhdx', 'raw']).default('vhdx'),
  /** How often workers sweep the catalog for disks with pending work (besides queue jobs). */
  mergeSweepMs: z.number().int().min(50).max(600_000).default(5000),
  /** Run merge workers inside `serve` (the embedded default). */
  embeddedWorkers: z.boolean(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  /** Webhook deliveries (docs/webhooks.md). */
  webhooks: z.strictObject({
    /**
     * Let tenants' subscriptions reach loopback, private and link-local addresses (a lab or test
     * setup). Default: a tenant's receiver must be a public address; hoster-wide ones may be anything.
     */
    allowPrivateTargets: z.boolean().default(false),
  }).prefault({}),
  /** Failover: the failover host `serve` runs by default, qemu, limits (docs/failover.md). */
  failover: z.strictObject({
    /** Run a failover host inside `serve` (the embedded default); else run `failover-host`. */
    embeddedHost: z.boolean().default(true),
    host: z.strictObject({
      /** The host's name in the catalog; placement and each failover's queue use it. */
      name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/).default('local'),
      /** Which hypervisor runs this host's VMs: qemu here, a Hyper-V host over SSH, or the hoster's orchestrator. */
      driver: z.enum(['qemu', 'hyperv', 'webhook']).default('qemu'),
      /** Overlays, seeds, NVRAM copies, sockets and consoles of the failovers placed here. */
      dir: z.string().min(1).default('failover'),
      /** Capacity offered to failed-over VMs. */
      cpus: z.number().int().min(1).max(4096).default(4),
      memoryMiB: z.number().int().min(256).max(64 * 1024 * 1024).default(8192),
      storageBytes: z.number().int().min(1 << 30).default(100 * 2 ** 30),
      /** DR networks this host reaches: name → the Linux bridge (and VLAN) a NIC is plugged into. */
      networks: z.record(z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/), z.strictObject({
        bridge: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/, 'must be a Linux interface name'),
        vlan: z.number().int().min(1).max(4094).optional(),
      })).default({}),
    }).prefault({}),
    qemu: z.strictObject({
      binary: z.string().min(1).default('qemu-system-x86_64'),
      img: z.string().min(1).default('qemu-img'),
      /** auto: KVM when a guest really runs under it (tried once and remembered), else TCG. */
      accel: z.enum(['auto', 'kvm', 'tcg']).default('auto'),
      /** How long qemu's NBD client keeps retrying a restarted failover host's export. */
      reconnectDelaySeconds: z.number().int().min(1).max(3600).default(300),
    }).prefault({}),
    /** The hyperv driver (docs/failover-drivers.md): the Hyper-V host it reaches over OpenSSH. */
    hyperv: z.strictObject({
      host: z.string().min(1).max(253),
      user: z.string().min(1).max(104),
      port: z.number().int().min(1).max(65535).optional(),
      identityFile: z.string().min(1).optional(),
      knownHostsFile: z.string().min(1).optional(),
      /** On the replica storage: where the differencing children and seeds of failovers go. */
      childDir: z.string().min(1),
      /** Each local replica storage directory and the same directory as the Hyper-V host names it. */
      paths: z.array(z.strictObject({ local: z.string().min(1), windows: z.string().min(1) })).min(1),
      /** DR network name → Hyper-V virtual switch. */
      switches: z.record(z.string(), z.string().min(1).max(100)).default({}),
      vmPath: z.string().min(1).optional(),
      /** The host's NAT (New-NetNat) that carries public addresses as static mappings. */
      nat: z.string().min(1).max(100).optional(),
    }).optional(),
    /** The webhook driver (docs/failover-drivers.md): the hoster's orchestrator. */
    webhook: z.strictObject({
      url: z.string().url(),
      /** A file holding the Standard Webhooks secret (whsec_…). */
      secretFile: z.string().min(1),
      callbackSecretFile: z.string().min(1).optional(),
      /** Where the orchestrator calls back: this service's /v1/failover-callbacks/<host name>. */
      callbackUrl: z.string().url(),
      caFile: z.string().min(1).optional(),
    }).optional(),
    /** Public addresses of failed-over VMs, applied with nftables by qemu hosts (docs/failover-public-ips.md). */
    publicIps: z.strictObject({
      nft: z.string().min(1).default('nft'),
      /** The interface facing the Internet: SNAT only out of it, and the forward filter from it. */
      uplink: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/, 'must be a Linux interface name').optional(),
      /** The network namespace (ip netns) the rules go into, else the host's own. */
      netns: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'must be a network namespace name').optional(),
    }).prefault({}),
    /** A test failover is stopped with a report after this long (it pins its point). */
    testMaxHours: z.number().min(0.01).max(24 * 30).default(24),
    /** How long a failover waits for the guest to answer a readiness probe. */
    readyTimeoutSeconds: z.number().int().min(10).max(3600).default(900),
  }).prefault({}),
});

export type ConfigFile = z.infer<typeof configSchema>;

/** A loaded configuration: the file's content with every path made absolute. */
export interface Config extends Omit<ConfigFile, 'redis'> {
  /** The file this came from. */
  path: string;
  redis: {
    /** What clients connect to: the configured URL, or the private Redis's socket path. */
    url: string;
    /** Set when no URL is configured: `serve` runs a redis-server listening on socket, its files in dir. */
    private?: { dir: string; socket: string } | undefined;
  };
}

/** The config path from --config, else LIFEBOAT_CONFIG; a clear error when neither is given. */
export function configPath(option: string | undefined): string {
  const p = option ?? process.env.LIFEBOAT_CONFIG;
  if (!p) throw ErrInvalidArgument('no configuration: pass --config FILE or set LIFEBOAT_CONFIG (lifeboat-service init makes one)');
  return resolve(p);
}

/** Reads, validates and resolves the configuration file. */
export async function loadConfig(option: string | undefined): Promise<Config> {
  const path = configPath(option);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw ErrInvalidArgument(`${path}: no such configuration file (lifeboat-service init makes one)`);
    if (code === 'EISDIR') throw ErrInvalidArgument(`${path}: is a directory; --config names the configuration file (${join(path, 'lifeboat.json')} where init made it)`);
    throw err;
  }
  if (text.length > MaxConfigBytes) throw new LifeboatError('too_large', `${path}: configuration larger than ${MaxConfigBytes} bytes`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw ErrInvalidArgument(`${path}: not JSON (${(err as Error).message})`);
  }
  return resolveConfig(parseConfig(json, path), path);
}

/** Validates a configuration object; the error names the first bad field. */
export function parseConfig(json: unknown, where: string): ConfigFile {
  const r = configSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const field = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
    throw ErrInvalidArgument(`${where}: ${field}: ${issue.message}`);
  }
  return r.data;
}

function resolveConfig(file: ConfigFile, path: string): Config {
  const base = dirname(path);
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const catalog = file.catalog.kind === 'pglite' ? { ...file.catalog, dir: abs(file.catalog.dir) } : file.catalog;
  const objectStore = { url: file.objectStore.url.startsWith('file:') ? fileUrl(file.objectStore.url, base) : file.objectStore.url };
  return {
    ...file,
    path,
    catalog,
    objectStore,
    redis: redisOf(file.redis, abs),
    replicaRoot: abs(file.replicaRoot),
    trust: {
      ...file.trust,
      caKeyFile: abs(file.trust.caKeyFile),
      caCertFile: abs(file.trust.caCertFile),
      signingKeyFile: abs(file.trust.signingKeyFile),
      masterKeyFile: abs(file.trust.masterKeyFile),
    },
    adminTokenFile: abs(file.adminTokenFile),
    failover: { ...file.failover, host: { ...file.failover.host, dir: abs(file.failover.host.dir) } },
  };
}

/** The configured Redis (REDIS_URL first), else the private one's socket in redis.dir. */
function redisOf(redis: ConfigFile['redis'], abs: (p: string) => string): Config['redis'] {
  const url = process.env.REDIS_URL || redis.url;
  if (url) return { url };
  const dir = abs(redis.dir);
  const socket = resolve(dir, 'redis.sock');
  return { url: socket, private: { dir, socket } };
}

/** file:relative/dir is relative to the config; file:///abs stays as it is. */
function fileUrl(url: string, base: string): string {
  if (url.startsWith('file://')) return url;
  return `file://${resolve(base, url.slice('file:'.length))}`;
}
