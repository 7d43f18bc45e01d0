/**
 * A redis-server child of this process: the private Redis `serve` runs when lifeboat.json names no
 * Redis (unix socket and append-only file in the data directory, no TCP port), and the tests' own
 * when no Redis answers (test/global-setup.ts).
 *
 * The child follows its parent (docs/service.md, "The private Redis"): it is started through
 * `setpriv --pdeathsig TERM`, so the kernel sends it SIGTERM when the process that started it dies,
 * even by SIGKILL, and Redis then writes its append-only file and exits. It runs in a process group of
 * its own, so a Ctrl-C at the terminal reaches only `serve`, which stops it last, after its clients.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { LifeboatError } from '../../shared/errors.js';

/** What to run when redis-server is missing, for the one line that says so. */
export const RedisInstallCommand = 'sudo apt-get install redis-server';
/** sun_path holds 108 bytes with the terminating NUL. */
export const MaxSocketPathBytes = 107;
/** Loading a large append-only file takes a while; Redis answers LOADING until it is done. */
export const RedisReadyTimeoutMs = 120_000;
/** How long a Redis found answering on the socket may take to go away (a killed serve's) before start is refused. */
export const StaleRedisWaitMs = 5000;
/** How long a stopping Redis may take to write its append-only file before it is killed. */
export const RedisStopTimeoutMs = 30_000;

export type RedisAddress = { path: string } | { host: string; port: number };

export interface RedisServerOptions {
  /** Working directory: the append-only file, the log and the generated redis.conf go here. */
  dir: string;
  /** Listen on this unix socket (mode 0700: this user only) and on no TCP port. */
  socket?: string | undefined;
  /** Listen on 127.0.0.1:port instead. */
  port?: number | undefined;
  /** Append-only file (fsync every second) so a restart keeps queued jobs; else nothing on disk. */
  appendOnly: boolean;
}

export interface RedisServer {
  /** The URL clients use: the socket path (ioredis takes it as is) or redis://127.0.0.1:port. */
  url: string;
  pid: number;
  /** Resolves when the process has exited, with its exit code or the signal that ended it. */
  exited: Promise<string>;
  /** SIGTERM (Redis writes its append-only file), then SIGKILL after RedisStopTimeoutMs. */
  stop(): Promise<void>;
}

/** The absolute path of an executable found on PATH, or undefined. */
export async function findExecutable(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const path = join(dir, name);
    try {
      await access(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** True when a Redis answers PING (+PONG) at the address within timeoutMs. */
export function redisAnswers(address: RedisAddress, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = 'path' in address ? connect(address.path) : connect(address.port, address.host);
    let got = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('\r\n')) done(got.startsWith('+PONG'));
    });
    sock.on('error', () => done(false));
    sock.on('close', () => done(false));
  });
}

/** redis.conf quoting (sdssplitargs): a double-quoted string with \\ and \" escaped. */
function quote(value: string): string {
  if (/[\r\n\0]/.test(value)) throw new LifeboatError('invalid_argument', `${JSON.stringify(value)}: a Redis path may not hold a line break`);
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** Starts redis-server and resolves once it answers PING; rejects with one line when it cannot. */
export async function startRedisServer(options: RedisServerOptions): Promise<RedisServer> {
  const binary = await findExecutable('redis-server');
  if (!binary) throw new LifeboatError('unavailable', `redis-server is not installed: run \`${RedisInstallCommand}\`, or set redis.url (or REDIS_URL) to a Redis you run`);
  const address: RedisAddress = options.socket ? { path: options.socket } : { host: '127.0.0.1', port: options.port ?? 0 };
  if ('path' in address && Buffer.byteLength(address.path) > MaxSocketPathBytes) {
    throw new LifeboatError('invalid_argument', `${address.path}: ${Buffer.byteLength(address.path)} bytes, longer than a unix socket path may be (${MaxSocketPathBytes}); set redis.dir to a shorter directory`);
  }
  if ('path' in address && address.path.includes('?')) throw new LifeboatError('invalid_argument', `${address.path}: a Redis socket path may not hold '?'; set redis.dir to another directory`);
  if (!('path' in address) && !address.port) throw new LifeboatError('invalid_argument', 'startRedisServer needs a socket or a port');
  await mkdir(options.dir, { recursive: true, mode: 0o700 });
  // A serve killed a moment ago: its Redis got SIGTERM and is writing its append-only file; wait for it.
  for (const end = Date.now() + StaleRedisWaitMs; await redisAnswers(address, 500);) {
    if (Date.now() < end) {
      await sleep(200);
      continue;
    }
    throw new LifeboatError('unavailable', `a Redis already answers at ${'path' in address ? address.path : `127.0.0.1:${address.port}`}: is another serve running on this data directory? Stop it first`);
  }
  const logFile = join(options.dir, 'redis.log');
  const confFile = join(options.dir, 'redis.conf');
  const conf = [
    '# Written by lifeboat at each start of its private redis-server; edits are overwritten.',
    'daemonize no',
    'always-show-logo no',
    `dir ${quote(options.dir)}`,
    `logfile ${quote(logFile)}`,
    ...('path' in address
      ? ['port 0', `unixsocket ${quote(address.path)}`, 'unixsocketperm 700']
      : ['bind 127.0.0.1', `port ${address.port}`]),
    // BullMQ needs every key kept: no eviction.
    'maxmemory-policy noeviction',
    'save ""',
    ...(options.appendOnly ? ['appendonly yes', 'appendfsync everysec'] : ['appendonly no']),
    '',
  ].join('\n');
  await writeFile(confFile, conf, { mode: 0o600 });

  // setpriv (util-linux) sets the parent-death signal and then executes redis-server in place, so the
  // child's pid is Redis's own.
  const setpriv = await findExecutable('setpriv');
  const [cmd, args] = setpriv ? [setpriv, ['--pdeathsig', 'TERM', '--', binary, confFile]] : [binary, [confFile]];
  const child = spawn(cmd, args, { cwd: options.dir, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000); });
  const exited = new Promise<string>((resolve) => {
    child.once('error', (err) => resolve(err.message));
    child.once('exit', (code, signal) => resolve(signal ?? `code ${code}`));
  });
  let gone: string | undefined;
  void exited.then((how) => { gone = how; });
  const url = 'path' in address ? address.path : `redis://127.0.0.1:${address.port}`;
  const server: RedisServer = { url, pid: child.pid ?? 0, exited, stop: () => stopChild(child, exited) };

  const deadline = Date.now() + RedisReadyTimeoutMs;
  while (!(await redisAnswers(address, 1000))) {
    if (gone !== undefined) {
      const why = (stderr.trim() || (await tail(logFile))).split('\n').filter(Boolean).at(-1) ?? '';
      throw new LifeboatError('unavailable', `redis-server (${confFile}) exited (${gone}) before it answered${why ? `: ${why.trim()}` : ''}`);
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new LifeboatError('unavailable', `redis-server (${confFile}) did not answer within ${RedisReadyTimeoutMs / 1000} s (see ${logFile})`);
    }
    await sleep(50);
  }
  return server;
}

async function stopChild(child: ChildProcess, exited: Promise<string>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), RedisStopTimeoutMs);
  await exited;
  clearTimeout(timer);
}

async function tail(file: string): Promise<string> {
  return (await readFile(file, 'utf8').catch(() => '')).slice(-4000);
}

export interface PrivateRedis {
  url: string;
  /** The running redis-server's pid (a new one after a restart). */
  pid(): number;
  stop(): Promise<void>;
}

/**
 * The private Redis of a data directory, supervised: when it exits on its own it is started again
 * (after 1 s, doubling to 30 s while it keeps failing), and clients reconnect to the same socket.
 */
export async function startPrivateRedis(where: { dir: string; socket: string }, log: Logger): Promise<PrivateRedis> {
  const options = { dir: where.dir, socket: where.socket, appendOnly: true };
  let current = await startRedisServer(options);
  log.info({ socket: where.socket, pid: current.pid }, 'private redis-server started');
  let stopping = false;
  const stopped = new AbortController();
  let restarting: Promise<void> = Promise.resolve();
  const watch = (server: RedisServer) => {
    void server.exited.then((how) => {
      if (stopping) return;
      restarting = restart(how);
    });
  };
  const restart = async (how: string) => {
    log.error({ exit: how, log: join(where.dir, 'redis.log') }, 'private redis-server exited; starting it again');
    for (let delay = 1000; !stopping; delay = Math.min(delay * 2, 30_000)) {
      await sleep(delay, undefined, { signal: stopped.signal }).catch(() => undefined);
      if (stopping) return;
      try {
        current = await startRedisServer(options);
        log.info({ pid: current.pid }, 'private redis-server started again');
        if (stopping) await current.stop();
        else watch(current);
        return;
      } catch (err) {
        log.error({ err: (err as Error).message }, 'private redis-server did not start again');
      }
    }
  };
  watch(current);
  return {
    url: current.url,
    pid: () => current.pid,
    async stop() {
      stopping = true;
      stopped.abort();
      await restarting;
      await current.stop();
    },
  };
}
