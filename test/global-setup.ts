/**
 * vitest global setup: the Redis and PostgreSQL the tests share. Those at LIFEBOAT_TEST_REDIS
 * (default redis://127.0.0.1:6379) and LIFEBOAT_TEST_PG (default
 * postgres://postgres@127.0.0.1:5432/test) when they answer, the database made when only it is
 * missing; otherwise private ones started here and stopped after the run: redis-server on a free port
 * of 127.0.0.1 without persistence, and a throwaway PostgreSQL cluster (Debian's initdb, then
 * postgres itself, trust auth, fsync off) in a temporary directory. Both follow this process if it is
 * killed (setpriv --pdeathsig, as the service's private Redis does); the directories of a killed run
 * are removed by the next one (owner.pid names the run). The addresses go back into
 * LIFEBOAT_TEST_REDIS and LIFEBOAT_TEST_PG, which the test helpers (test/helpers.ts) and the
 * processes the tests start read.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { access, chown, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import pg from 'pg';
import { findExecutable, redisAnswers, startRedisServer } from '../service/redis/server.js';
import { DefaultTestPgUrl, DefaultTestRedisUrl, execFileP, freePort, processGone } from './helpers.js';

type Stop = () => Promise<void>;

export default async function setup(): Promise<Stop> {
  await sweepLeftovers();
  const stops: Stop[] = [];
  const teardown = async () => {
    for (const stop of stops.reverse()) await stop().catch((err: unknown) => process.stderr.write(`global teardown: ${(err as Error).message}\n`));
  };
  try {
    const redis = await testRedis(process.env.LIFEBOAT_TEST_REDIS || DefaultTestRedisUrl);
    if (redis.stop) stops.push(redis.stop);
    const pgUrl = await testPostgres(process.env.LIFEBOAT_TEST_PG || DefaultTestPgUrl);
    if (pgUrl.stop) stops.push(pgUrl.stop);
    process.env.LIFEBOAT_TEST_REDIS = redis.url;
    process.env.LIFEBOAT_TEST_PG = pgUrl.url;
    process.stderr.write(`tests use Redis ${redis.url} (${redis.how}) and PostgreSQL ${pgUrl.url} (${pgUrl.how})\n`);
  } catch (err) {
    await teardown();
    throw err;
  }
  return teardown;
}

interface Backend { url: string; how: string; stop?: Stop }

const OwnerFile = 'owner.pid';

/** A temporary directory that names this process as its owner. */
async function scratch(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await writeFile(join(dir, OwnerFile), `${process.pid}\n`);
  return dir;
}

/** Removes the directories of runs that were killed (their servers went with them; the files stayed). */
async function sweepLeftovers(): Promise<void> {
  for (const name of await readdir(tmpdir())) {
    if (!/^lifeboat-test-(pg|redis)-/.test(name)) continue;
    const dir = join(tmpdir(), name);
    const owner = Number(await readFile(join(dir, OwnerFile), 'utf8').catch(() => ''));
    if (owner && await processGone(owner)) await rm(dir, { recursive: true, force: true });
  }
}

async function testRedis(url: string): Promise<Backend> {
  const u = new URL(url);
  if (await redisAnswers({ host: u.hostname, port: Number(u.port || 6379) })) return { url, how: 'answering' };
  const dir = await scratch('lifeboat-test-redis-');
  try {
    const server = await startRedisServer({ dir, port: await freePort(), appendOnly: false });
    return {
      url: server.url, how: `started here: nothing answered at ${url}`,
      stop: async () => {
        await server.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`no Redis answers at ${url} (set LIFEBOAT_TEST_REDIS) and none could be started: ${(err as Error).message}`);
  }
}

async function testPostgres(url: string): Promise<Backend> {
  const why = await usePostgres(url);
  if (why === undefined) return { url, how: 'answering' };
  const bin = await postgresBin();
  if (!bin) throw new Error(`PostgreSQL at ${url} is not usable (${why}; set LIFEBOAT_TEST_PG) and initdb is not installed to start one: sudo apt-get install postgresql`);
  const dir = await scratch('lifeboat-test-pg-');
  let postgres: ChildProcess | undefined;
  const stop = async () => {
    if (postgres && postgres.exitCode === null && postgres.signalCode === null) {
      const exited = new Promise((r) => postgres!.once('exit', r));
      postgres.kill('SIGINT'); // fast shutdown
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    // initdb refuses to run as root: as root, the cluster belongs to the postgres user (or nobody).
    const user = process.getuid?.() === 0 ? await systemUser(['postgres', 'nobody']) : undefined;
    if (user) await chown(dir, user.uid, user.gid);
    const as = user ? ['--reuid', String(user.uid), '--regid', String(user.gid), '--clear-groups'] : [];
    const data = join(dir, 'data');
    await execFileP('setpriv', [...as, '--', join(bin, 'initdb'), '-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C', '-N'], { cwd: dir });
    const port = await freePort();
    postgres = spawn('setpriv', ['--pdeathsig', 'TERM', ...as, '--', join(bin, 'postgres'), '-D', data, '-p', String(port), '-k', dir,
      '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=300'],
    { cwd: dir, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    postgres.stderr!.on('data', (d: Buffer) => { log = (log + d.toString()).slice(-4000); });
    const own = `postgres://postgres@127.0.0.1:${port}/test`;
    const deadline = Date.now() + 60_000;
    for (;;) {
      const still = await usePostgres(own);
      if (still === undefined) break;
      if (postgres.exitCode !== null || Date.now() > deadline) throw new Error(`postgres did not start: ${(log.trim().split('\n').at(-1) ?? still)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return { url: own, how: `started here: ${why}`, stop };
  } catch (err) {
    await stop();
    throw new Error(`PostgreSQL at ${url} is not usable (${why}) and none could be started: ${(err as Error).message}`);
  }
}

/** undefined when the database answers as the tests use it (made when only it was missing), else why not. */
async function usePostgres(url: string): Promise<string | undefined> {
  const tryConnect = async (target: string) => {
    const client = new pg.Client({ connectionString: target, connectionTimeoutMillis: 2000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      return client;
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
  };
  try {
    await (await tryConnect(url)).end();
    return undefined;
  } catch (err) {
    if ((err as { code?: string }).code !== '3D000') return (err as Error).message || String(err);
  }
  const u = new URL(url);
  const db = decodeURIComponent(u.pathname.slice(1));
  u.pathname = '/postgres';
  try {
    const admin = await tryConnect(u.toString());
    try {
      await admin.query(`CREATE DATABASE "${db.replace(/"/g, '""')}"`);
    } finally {
      await admin.end();
    }
    return undefined;
  } catch (err) {
    // Another run made it at the same moment: fine.
    if ((err as { code?: string }).code === '42P04') return undefined;
    return (err as Error).message;
  }
}

/** The directory holding initdb and postgres: on PATH, else Debian's newest /usr/lib/postgresql/N/bin. */
async function postgresBin(): Promise<string | undefined> {
  const onPath = await findExecutable('initdb');
  const versions = (await readdir('/usr/lib/postgresql').catch(() => [] as string[])).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
  for (const dir of [...(onPath ? [dirname(onPath)] : []), ...versions.map((v) => `/usr/lib/postgresql/${v}/bin`)]) {
    const has = (name: string) => access(join(dir, name), constants.X_OK).then(() => true, () => false);
    if (await has('initdb') && await has('postgres')) return dir;
  }
  return undefined;
}

async function systemUser(names: string[]): Promise<{ uid: number; gid: number }> {
  const passwd = (await readFile('/etc/passwd', 'utf8')).split('\n').map((l) => l.split(':'));
  for (const name of names) {
    const e = passwd.find((f) => f[0] === name);
    if (e) return { uid: Number(e[2]), gid: Number(e[3]) };
  }
  throw new Error(`running as root, and none of the users ${names.join(', ')} exists to own a PostgreSQL cluster`);
}
