/**
 * Clients for qemu's two JSON protocols over unix sockets (qemu docs/interop/qmp-spec.rst and
 * qga/qapi-schema.json):
 *
 * - QmpClient: the QEMU Machine Protocol. Connect reads the greeting (`{"QMP": {...}}`) and
 *   negotiates `qmp_capabilities`; `execute(command, args)` sends `{"execute", "arguments", "id"}`
 *   and resolves with `return` of the reply carrying the same id; asynchronous events
 *   (`{"event", "data", "timestamp"}`) are emitted as 'event' and can be awaited with `waitEvent`.
 *   Several commands may be in flight. A qemu error reply becomes a QmpError (a LifeboatError) naming
 *   the command and qemu's `desc`; a closed connection fails every pending command.
 * - GuestAgentClient: qemu-guest-agent on its virtio-serial chardev. It has no greeting and no ids,
 *   and the channel may hold stale bytes from an earlier client, so before the first command (and
 *   after any timeout) it resynchronises: send 0xFF (resets the agent's parser), then
 *   `guest-sync-delimited {id}`; the agent answers with 0xFF followed by `{"return": id}`, and
 *   everything before that 0xFF is discarded. Commands then run one at a time.
 *
 * Both parse the byte stream with one splitter that cuts whole JSON objects (strings and escapes
 * respected) and skips what lies between them (CRLF, whitespace).
 */
import { randomInt } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import { LifeboatError, type ErrorCode } from '../errors.js';

export const DefaultConnectTimeoutMs = 5_000;
export const DefaultCommandTimeoutMs = 30_000;
/** guest-exec-status is polled at this interval until the process exits. */
const ExecPollMs = 100;
/** guest-file-read chunk (the agent caps a read at 48 MiB; its JSON line grows by base64). */
const FileReadChunk = 1 << 20;

/** A qemu error reply: `class` as qemu names it (GenericError, CommandNotFound, DeviceNotFound, …). */
export class QmpError extends LifeboatError {
  readonly qmpClass: string;
  constructor(code: ErrorCode, message: string, qmpClass: string) {
    super(code, message);
    this.name = 'QmpError';
    this.qmpClass = qmpClass;
  }
}

export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

type Json = Record<string, unknown>;

const codeByClass: Record<string, ErrorCode> = { CommandNotFound: 'unsupported', DeviceNotFound: 'not_found' };

function errorReply(command: string, reply: Json): QmpError {
  const err = (reply.error ?? {}) as { class?: string; desc?: string };
  const cls = err.class ?? 'GenericError';
  return new QmpError(codeByClass[cls] ?? 'io', `qemu ${command}: ${err.desc ?? cls}`, cls);
}

function connectionError(what: string, socketPath: string, err: unknown): LifeboatError {
  const e = err as NodeJS.ErrnoException;
  const why = e.code === 'ENOENT' ? 'no such socket' : e.code === 'ECONNREFUSED' ? 'connection refused (nothing listening)' : (e.message ?? String(err));
  return new LifeboatError('unavailable', `${what} ${socketPath}: ${why}`, { cause: err });
}

/**
 * Cuts a byte stream into JSON objects. Bytes outside an object are skipped; `resync()` makes it
 * drop everything up to and including the next 0xFF byte (a byte valid UTF-8 never holds).
 */
export class JsonSplitter {
  private parts: Buffer[] = [];
  private depth = 0;
  private inString = false;
  private escaped = false;
  private awaitingDelimiter = false;

  resync(): void {
    this.awaitingDelimiter = true;
    this.reset();
  }

  /** Feeds bytes; returns the objects completed by them, in order. */
  feed(chunk: Buffer): Json[] {
    const out: Json[] = [];
    let start = this.depth > 0 ? 0 : -1;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      if (this.awaitingDelimiter) {
        if (b === 0xff) this.awaitingDelimiter = false;
        continue;
      }
      if (b === 0xff) { this.reset(); start = -1; continue; }
      if (this.depth === 0) {
        if (b === 0x7b /* { */) { this.depth = 1; start = i; }
        continue;
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (b === 0x5c /* \ */) this.escaped = true;
        else if (b === 0x22 /* " */) this.inString = false;
        continue;
      }
      if (b === 0x22) this.inString = true;
      else if (b === 0x7b || b === 0x5b) this.depth++;
      else if (b === 0x7d || b === 0x5d) {
        this.depth--;
        if (this.depth === 0) {
          this.parts.push(chunk.subarray(start, i + 1));
          const text = Buffer.concat(this.parts).toString('utf8');
          this.parts = [];
          start = -1;
          try {
            out.push(JSON.parse(text) as Json);
          } catch {
            // Not JSON after all: dropped, as qemu's own parser would.
          }
        }
      }
    }
    if (this.depth > 0 && start >= 0) this.parts.push(chunk.subarray(start));
    return out;
  }

  private reset(): void {
    this.parts = [];
    this.depth = 0;
    this.inString = false;
    this.escaped = false;
  }
}

function openSocket(path: string, what: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect({ path });
    const timer = setTimeout(() => { sock.destroy(); reject(new LifeboatError('unavailable', `${what} ${path}: no connection within ${timeoutMs} ms`)); }, timeoutMs);
    sock.once('connect', () => { clearTimeout(timer); sock.removeAllListeners('error'); resolve(sock); });
    sock.once('error', (err) => { clearTimeout(timer); reject(connectionError(what, path, err)); });
  });
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * A QMP connection. Events: 'event' (QmpEvent), 'close' (after the socket closed, for any reason).
 * Only one client at a time can hold a qemu monitor socket: close() when done.
 */
export class QmpClient extends EventEmitter {
  readonly greeting: QmpGreeting;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private isClosed = false;

  private constructor(private readonly sock: Socket, private readonly splitter: JsonSplitter, greeting: QmpGreeting, private readonly path: string) {
    super();
    this.greeting = greeting;
    sock.on('data', (chunk: Buffer) => { for (const msg of this.splitter.feed(chunk)) this.dispatch(msg); });
    sock.on('error', () => undefined);
    sock.on('close', () => this.onClose());
  }

  /** Connects, reads the greeting and enters command mode (qmp_capabilities). */
  static async connect(path: string, options: { timeoutMs?: number } = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? DefaultConnectTimeoutMs;
    const sock = await openSocket(path, 'qmp', timeoutMs);
    const splitter = new JsonSplitter();
    let greeting: QmpGreeting;
    try {
      greeting = await new Promise<QmpGreeting>((resolve, reject) => {
        const timer = setTimeout(() => reject(new LifeboatError('unavailable', `qmp ${path}: no greeting within ${timeoutMs} ms (is another client connected?)`)), timeoutMs);
        const onData = (chunk: Buffer) => {
          const msgs = splitter.feed(chunk);
          const first = msgs[0];
          if (!first) return;
          clearTimeout(timer);
          sock.off('data', onData);
          if (!first.QMP) reject(new LifeboatError('corrupt', `qmp ${path}: expected a greeting, got ${JSON.stringify(first).slice(0, 200)}`));
          else resolve(first.QMP as QmpGreeting);
        };
        sock.on('data', onData);
        sock.once('close', () => { clearTimeout(timer); reject(new LifeboatError('unavailable', `qmp ${path}: closed before its greeting`)); });
      });
    } catch (err) {
      sock.destroy();
      throw err;
    }
    const client = new QmpClient(sock, splitter, greeting, path);
    try {
      await client.execute('qmp_capabilities', undefined, { timeoutMs });
    } catch (err) {
      await client.close();
      throw err;
    }
    return client;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Runs one command; resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, options: { timeoutMs?: number } = {}): Promise<T> {
    if (this.isClosed) return Promise.reject(new LifeboatError('unavailable', `qemu ${command}: qmp connection ${this.path} closed`));
    const id = this.nextId++;
    const timeoutMs = options.timeoutMs ?? DefaultCommandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new LifeboatError('unavailable', `qemu ${command}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      const msg: Json = { execute: command, id };
      if (args !== undefined) msg.arguments = args;
      this.sock.write(JSON.stringify(msg) + '\n');
    });
  }

  /** Runs a human monitor (HMP) command line; resolves with its text output. */
  hmp(commandLine: string, options: { timeoutMs?: number } = {}): Promise<string> {
    return this.execute<string>('human-monitor-command', { 'command-line': commandLine }, options);
  }

  /**
   * The next event named `name` for which `filter` holds. Subscribe before issuing the command that
   * causes it, or the event may pass before the wait begins.
   */
  waitEvent(name: string, filter: (data: Record<string, unknown>) => boolean = () => true, timeoutMs = DefaultCommandTimeoutMs): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const cleanup = () => { clearTimeout(timer); this.off('event', onEvent); this.off('close', onClose); };
      const onEvent = (ev: QmpEvent) => { if (ev.event === name && filter(ev.data)) { cleanup(); resolve(ev); } };
      const onClose = () => { cleanup(); reject(new LifeboatError('unavailable', `qmp ${this.path}: closed while waiting for ${name}`)); };
      const timer = setTimeout(() => { cleanup(); reject(new LifeboatError('unavailable', `qmp ${this.path}: no ${name} event within ${timeoutMs} ms`)); }, timeoutMs);
      if (this.isClosed) { onClose(); return; }
      this.on('event', onEvent);
      this.on('close', onClose);
    });
  }

  /** Closes the connection (qemu keeps running); pending commands fail. */
  close(): Promise<void> {
    if (this.isClosed) return Promise.resolve();
    return new Promise((resolve) => {
      this.sock.once('close', () => resolve());
      this.sock.end();
      setTimeout(() => this.sock.destroy(), 1000).unref();
    });
  }

  private dispatch(msg: Json): void {
    if (typeof msg.event === 'string') {
      this.emit('event', { event: msg.event, data: (msg.data ?? {}) as Record<string, unknown>, timestamp: msg.timestamp } as QmpEvent);
      return;
    }
    const id = msg.id;
    if (typeof id !== 'number') return;
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if ('error' in msg) p.reject(errorReply(p.command, msg));
    else p.resolve(msg.return);
  }

  private onClose(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new LifeboatError('unavailable', `qemu ${p.command}: qmp connection ${this.path} closed (qemu exited?)`));
    }
    this.pending.clear();
    this.emit('close');
  }
}

export interface GuestExecResult {
  exitCode: number | undefined;
  signal: number | undefined;
  stdout: Buffer;
  stderr: Buffer;
}

export interface GuestInterface {
  name: string;
  'hardware-address'?: string;
  'ip-addresses'?: { 'ip-address-type': 'ipv4' | 'ipv6'; 'ip-address': string; prefix: number }[];
}

/** A qemu-guest-agent connection. Commands run one at a time; a timeout forces a resync before the next. */
export class GuestAgentClient {
  private readonly splitter = new JsonSplitter();
  private waiter: ((msg: Json) => void) | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private synced = false;
  private isClosed = false;

  private constructor(private readonly sock: Socket, private readonly path: string) {
    sock.on('data', (chunk: Buffer) => {
      for (const msg of this.splitter.feed(chunk)) this.waiter?.(msg);
    });
    sock.on('error', () => undefined);
    sock.on('close', () => { this.isClosed = true; this.waiter?.({ __closed: true }); });
  }

  /** Connects and synchronises (guest-sync-delimited); fails when the agent does not answer in time. */
  static async connect(path: string, options: { timeoutMs?: number } = {}): Promise<GuestAgentClient> {
    const timeoutMs = options.timeoutMs ?? DefaultConnectTimeoutMs;
    const client = new GuestAgentClient(await openSocket(path, 'guest agent', timeoutMs), path);
    try {
      await client.sync(timeoutMs);
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  /** 0xFF, then guest-sync-delimited with a random id; waits for that id after the agent's 0xFF. */
  sync(timeoutMs = DefaultConnectTimeoutMs): Promise<void> {
    return this.serial(async () => {
      const id = randomInt(1, 2 ** 31);
      this.splitter.resync();
      this.sock.write(Buffer.from([0xff]));
      this.sock.write(JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } }) + '\n');
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const msg = await this.next('guest-sync-delimited', Math.max(1, deadline - Date.now()));
        if (msg.return === id) break;
        // A stale answer (an earlier sync's, or a late reply): wait for the next delimiter.
        this.splitter.resync();
      }
      this.synced = true;
    });
  }

  /** Runs one command; resolves with its `return` value. */
  async execute<T = unknown>(command: string, args?: Record<string, unknown>, options: { timeoutMs?: number } = {}): Promise<T> {
    if (!this.synced) await this.sync(options.timeoutMs);
    return this.serial(async () => {
      const msg: Json = { execute: command };
      if (args !== undefined) msg.arguments = args;
      this.sock.write(JSON.stringify(msg) + '\n');
      const reply = await this.next(command, options.timeoutMs ?? DefaultCommandTimeoutMs);
      if ('error' in reply) throw errorReply(command, reply);
      return reply.return as T;
    });
  }

  async ping(options: { timeoutMs?: number } = {}): Promise<void> {
    await this.execute('guest-ping', undefined, options);
  }

  /** Runs a program in the guest, waits for it and returns its exit status and output. */
  async exec(path: string, args: string[] = [], options: { input?: Buffer; timeoutMs?: number } = {}): Promise<GuestExecResult> {
    const timeoutMs = options.timeoutMs ?? DefaultCommandTimeoutMs;
    const req: Record<string, unknown> = { path, arg: args, 'capture-output': true };
    if (options.input) req['input-data'] = options.input.toString('base64');
    const { pid } = await this.execute<{ pid: number }>('guest-exec', req, { timeoutMs });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const st = await this.execute<{ exited: boolean; exitcode?: number; signal?: number; 'out-data'?: string; 'err-data'?: string }>('guest-exec-status', { pid }, { timeoutMs });
      if (st.exited) {
        return {
          exitCode: st.exitcode,
          signal: st.signal,
          stdout: Buffer.from(st['out-data'] ?? '', 'base64'),
          stderr: Buffer.from(st['err-data'] ?? '', 'base64'),
        };
      }
      if (Date.now() > deadline) throw new LifeboatError('unavailable', `guest-exec ${path}: still running after ${timeoutMs} ms (guest pid ${pid})`);
      await new Promise((r) => setTimeout(r, ExecPollMs));
    }
  }

  networkInterfaces(options: { timeoutMs?: number } = {}): Promise<GuestInterface[]> {
    return this.execute<GuestInterface[]>('guest-network-get-interfaces', undefined, options);
  }

  /** Reads a whole file of the guest (guest-file-open/read/close); refuses one larger than maxBytes. */
  async readFile(path: string, options: { maxBytes?: number; timeoutMs?: number } = {}): Promise<Buffer> {
    const maxBytes = options.maxBytes ?? 64 << 20;
    const handle = await this.execute<number>('guest-file-open', { path, mode: 'r' }, options);
    try {
      const parts: Buffer[] = [];
      let total = 0;
      for (;;) {
        const r = await this.execute<{ count: number; 'buf-b64': string; eof: boolean }>('guest-file-read', { handle, count: FileReadChunk }, options);
        const buf = Buffer.from(r['buf-b64'], 'base64');
        total += buf.length;
        if (total > maxBytes) throw new LifeboatError('too_large', `guest file ${path}: larger than ${maxBytes} bytes`);
        parts.push(buf);
        if (r.eof || r.count === 0) break;
      }
      return Buffer.concat(parts);
    } finally {
      await this.execute('guest-file-close', { handle }, options).catch(() => undefined);
    }
  }

  close(): void {
    this.isClosed = true;
    this.sock.destroy();
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private next(command: string, timeoutMs: number): Promise<Json> {
    if (this.isClosed) return Promise.reject(new LifeboatError('unavailable', `guest agent ${command}: connection ${this.path} closed`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        this.synced = false;
        reject(new LifeboatError('unavailable', `guest agent ${command}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = (msg) => {
        clearTimeout(timer);
        this.waiter = undefined;
        if (msg.__closed) reject(new LifeboatError('unavailable', `guest agent ${command}: connection ${this.path} closed`));
        else resolve(msg);
      };
    });
  }
}
