/**
 * `backup OUT` / `restore IN`: the service's keys, its configuration and a dump of its catalog in one
 * file, encrypted under a passphrase (docs/formats/backup.md). The catalog dump is pg_dump's (custom
 * format, one consistent snapshot while the service runs) for PostgreSQL, PGlite's dump of its data
 * directory for the embedded catalog (taken holding the catalog, so with serve stopped). The archive
 * is a compact JWE (jose: PBES2-HS512+A256KW, A256GCM) of the gzipped JSON document; nothing here is
 * hand-written cryptography. Replica storage and the object store are not in it: they are backed up
 * where they live, and the restored configuration names them as the original did.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync, gzipSync } from 'node:zlib';
import { CompactEncrypt, compactDecrypt, decodeProtectedHeader } from 'jose';
import { z } from 'zod';
import { ErrInvalidArgument, LifeboatError } from '../../shared/errors.js';
import type { Config, ConfigFile } from '../config/config.js';
import { ConfigFileName, parseConfig } from '../config/config.js';

const execFileP = promisify(execFile);

export const BackupFormat = 'lifeboat-backup';
export const BackupVersion = 1;
/** PBES2 iterations: OWASP's figure for PBKDF2-HMAC-SHA512 (2023). */
export const Pbes2Iterations = 210_000;
const MaxPbes2Iterations = 10_000_000;
export const MinPassphraseLength = 12;
const MaxArchiveBytes = 1 << 30;

const documentSchema = z.strictObject({
  format: z.literal(BackupFormat),
  version: z.literal(BackupVersion),
  createdAt: z.string(),
  /** The configuration, with replica root and object store made absolute (they are not in the archive). */
  config: z.record(z.string(), z.unknown()),
  keys: z.strictObject({ caKey: z.string(), caCert: z.string(), signingJwk: z.string(), masterKey: z.string(), adminToken: z.string() }),
  catalog: z.strictObject({ kind: z.enum(['pglite', 'postgres']), schema: z.string().optional(), dump: z.string() }),
});
export type BackupDocument = z.infer<typeof documentSchema>;

/** The passphrase from a file (its first line), checked for length. */
export async function readPassphrase(file: string | undefined): Promise<string> {
  const path = file ?? process.env.LIFEBOAT_BACKUP_PASSPHRASE_FILE;
  if (!path) throw ErrInvalidArgument('no passphrase: pass --passphrase-file FILE (or set LIFEBOAT_BACKUP_PASSPHRASE_FILE)');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw ErrInvalidArgument(`${path}: cannot read the passphrase file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  const pass = text.split(/\r?\n/)[0]!;
  if (pass.length < MinPassphraseLength) throw ErrInvalidArgument(`${path}: the passphrase must be at least ${MinPassphraseLength} characters`);
  return pass;
}

/** The catalog's dump: pg_dump of its schema, or PGlite's tarball of its directory. */
async function dumpCatalog(config: Config): Promise<BackupDocument['catalog']> {
  if (config.catalog.kind === 'pglite') {
    const { dumpPglite } = await import('../catalog/pglite.js');
    return { kind: 'pglite', dump: (await dumpPglite(config.catalog.dir)).toString('base64') };
  }
  const schema = config.catalog.schema ?? 'public';
  const { stdout } = await run('pg_dump', ['--format=custom', '--no-owner', '--no-privileges', `--schema=${schema}`, `--dbname=${config.catalog.url}`]);
  return { kind: 'postgres', schema, dump: stdout.toString('base64') };
}

/** Runs a PostgreSQL client binary; a missing one or its refusal is one line. */
async function run(cmd: string, args: string[], input?: Buffer): Promise<{ stdout: Buffer }> {
  try {
    const child = execFileP(cmd, args, { encoding: 'buffer', maxBuffer: MaxArchiveBytes });
    if (input) child.child.stdin!.end(input);
    const { stdout } = await child;
    return { stdout };
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT') throw new LifeboatError('unavailable', `${cmd} is not installed (Debian: apt-get install postgresql-client)`);
    const first = (e.stderr?.toString() ?? e.message).trim().split('\n')[0]!;
    throw new LifeboatError('io', `${cmd} failed: ${first}`, { cause: err });
  }
}

/** Writes the encrypted archive to out (never over an existing file); returns its size. */
export async function writeBackup(config: Config, out: string, passphrase: string): Promise<{ path: string; bytes: number; catalog: 'pglite' | 'postgres' }> {
  const path = resolve(out);
  if (await stat(path).then(() => true, () => false)) throw new LifeboatError('already_exists', `${path} already exists; a backup never overwrites a file`);
  const text = async (p: string) => readFile(p, 'utf8');
  const file = JSON.parse(await text(config.path)) as Record<string, unknown>;
  const keys = {
    caKey: await text(config.trust.caKeyFile), caCert: await text(config.trust.caCertFile), signingJwk: await text(config.trust.signingKeyFile),
    masterKey: await text(config.trust.masterKeyFile), adminToken: await text(config.adminTokenFile),
  };
  const catalog = await dumpCatalog(config);
  const doc: BackupDocument = {
    format: BackupFormat, version: BackupVersion, createdAt: new Date().toISOString(),
    config: { ...file, replicaRoot: config.replicaRoot, objectStore: { url: config.objectStore.url } }, keys, catalog,
  };
  const jwe = await new CompactEncrypt(gzipSync(Buffer.from(JSON.stringify(doc))))
    .setProtectedHeader({ alg: 'PBES2-HS512+A256KW', enc: 'A256GCM', cty: `${BackupFormat}+json+gzip`, typ: `${BackupFormat}.v${BackupVersion}` })
    .setKeyManagementParameters({ p2c: Pbes2Iterations, p2s: randomBytes(16) })
    .encrypt(new TextEncoder().encode(passphrase));
  await mkdir(dirname(path), { recursive: true });
  const tmp = join(dirname(path), `.${Date.now()}-${process.pid}.backup-tmp`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(`${jwe}\n`);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await rename(tmp, path);
  return { path, bytes: jwe.length + 1, catalog: catalog.kind };
}

/** Opens an archive: the passphrase and the archive's integrity are checked together (GCM). */
export async function readBackup(path: string, passphrase: string): Promise<BackupDocument> {
  const size = (await stat(path).catch(() => {
    throw ErrInvalidArgument(`${path}: no such backup file`);
  })).size;
  if (size > MaxArchiveBytes * 2) throw new LifeboatError('too_large', `${path}: larger than any backup (${size} bytes)`);
  const jwe = (await readFile(path, 'utf8')).trim();
  let header;
  try {
    header = decodeProtectedHeader(jwe);
  } catch {
    throw ErrInvalidArgument(`${path}: not a lifeboat backup`);
  }
  if (header.typ !== `${BackupFormat}.v${BackupVersion}`) throw ErrInvalidArgument(`${path}: not a lifeboat backup of version ${BackupVersion}`);
  let plaintext: Uint8Array;
  try {
    ({ plaintext } = await compactDecrypt(jwe, new TextEncoder().encode(passphrase), { keyManagementAlgorithms: ['PBES2-HS512+A256KW'], contentEncryptionAlgorithms: ['A256GCM'], maxPBES2Count: MaxPbes2Iterations }));
  } catch {
    throw new LifeboatError('unauthenticated', `${path}: wrong passphrase, or the backup was altered`);
  }
  const r = documentSchema.safeParse(JSON.parse(gunzipSync(plaintext).toString('utf8')));
  if (!r.success) throw new LifeboatError('corrupt', `${path}: ${r.error.issues[0]!.path.join('.')}: ${r.error.issues[0]!.message}`);
  return r.data;
}

export interface RestoreOptions {
  dataDir: string;
  /** PostgreSQL catalogs: the server to restore into (default: the one the backup came from). */
  catalogUrl?: string | undefined;
}

/**
 * Makes a new data directory from an archive: keys (0600), configuration, and the catalog (a new
 * embedded one in DIR/catalog, or the schema restored into an empty one on a PostgreSQL server).
 */
export async function restoreBackup(doc: BackupDocument, options: RestoreOptions): Promise<{ configPath: string; catalog: string }> {
  const dir = resolve(options.dataDir);
  const configPath = await checkRestoreTarget(dir);
  const file = { ...doc.config } as Record<string, unknown>;
  file.trust = { ...(file.trust as object), caKeyFile: 'keys/ca.key', caCertFile: 'keys/ca.crt', signingKeyFile: 'keys/signing.jwk', masterKeyFile: 'keys/master.key' };
  file.adminTokenFile = 'keys/admin.token';
  let catalog: string;
  if (doc.catalog.kind === 'pglite') {
    file.catalog = { kind: 'pglite', dir: 'catalog' };
    catalog = join(dir, 'catalog');
  } else {
    const url = options.catalogUrl ?? (file.catalog as { url: string }).url;
    file.catalog = { kind: 'postgres', url, ...(doc.catalog.schema && doc.catalog.schema !== 'public' ? { schema: doc.catalog.schema } : {}) };
    catalog = `${doc.catalog.schema} on ${url.replace(/\/\/[^@/]*@/, '//')}`;
  }
  const checked: ConfigFile = parseConfig(file, `${configPath} (from the backup)`);
  await mkdir(join(dir, 'keys'), { recursive: true, mode: 0o700 });
  const secret = (name: string, data: string) => writeFile(join(dir, 'keys', name), data, { mode: 0o600, flag: 'wx' });
  await secret('ca.key', doc.keys.caKey);
  await writeFile(join(dir, 'keys', 'ca.crt'), doc.keys.caCert, { mode: 0o644, flag: 'wx' });
  await secret('signing.jwk', doc.keys.signingJwk);
  await secret('master.key', doc.keys.masterKey);
  await secret('admin.token', doc.keys.adminToken);
  const dump = Buffer.from(doc.catalog.dump, 'base64');
  if (doc.catalog.kind === 'pglite') {
    const { loadPglite } = await import('../catalog/pglite.js');
    await loadPglite(join(dir, 'catalog'), dump);
  } else {
    await restorePostgres((checked.catalog as { url: string }).url, doc.catalog.schema ?? 'public', dump);
  }
  await writeFile(configPath, `${JSON.stringify(checked, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  return { configPath, catalog };
}

/** The configuration path a restore into dir writes; refused when dir already has one. */
export async function checkRestoreTarget(dataDir: string): Promise<string> {
  const configPath = join(resolve(dataDir), ConfigFileName);
  if (await stat(configPath).then(() => true, () => false)) throw new LifeboatError('already_exists', `${configPath} already exists; restore makes a new data directory`);
  return configPath;
}

/** pg_restore into a schema that must hold no table yet (a restore never mixes two catalogs). */
async function restorePostgres(url: string, schema: string, dump: Buffer): Promise<void> {
  const pg = (await import('pg')).default;
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
    const rows = await client.query('SELECT count(*)::int AS n FROM information_schema.tables WHERE table_schema = $1', [schema]);
    if ((rows.rows[0] as { n: number }).n > 0) throw new LifeboatError('already_exists', `schema ${schema} already holds tables; restore into an empty database or schema`);
  } catch (err) {
    if (err instanceof LifeboatError) throw err;
    throw new LifeboatError('unavailable', `PostgreSQL at ${url.replace(/\/\/[^@/]*@/, '//')} does not answer: ${(err as Error).message}`, { cause: err });
  } finally {
    await client.end().catch(() => undefined);
  }
  await run('pg_restore', ['--no-owner', '--no-privileges', '--exit-on-error', `--dbname=${url}`], dump);
}
