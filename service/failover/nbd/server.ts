/**
 * NbdServer: serves recovery points' disks read-only over NBD (docs/formats/nbd.md) on a unix
 * socket, or on TCP: loopback in the clear, any other address only with TLS (NBD_OPT_STARTTLS,
 * required before anything else, as qemu's tls-creds-x509 client does it).
 *
 * Exports come from the resolver, by name, at the handshake; an unknown name is refused there. An
 * export's image is opened once, on first use, and shared by its connections until dropExport or
 * close. Input: the resolver and listen addresses. Output: connections served until the client
 * leaves; counters in stats(). Failure: listening on a non-loopback address without TLS, or on a
 * path another server holds, throws a LifeboatError; anything a client sends ends at worst its own
 * connection, logged, never the process.
 */
import { lstat, unlink } from 'node:fs/promises';
import { connect, createServer, isIP, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { finished } from 'node:stream/promises';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { ErrInvalidArgument, LifeboatError } from '../../../shared/errors.js';
import { ConnectionEnded } from './byte-reader.js';
import { handshake, type HandshakeContext } from './handshake.js';
import { transmission } from './transmission.js';
import type { NbdExport, NbdServerOptions, NbdStats, OpenExport } from './types.js';

export type { NbdExport, NbdServerOptions, NbdStats } from './types.js';

export interface TlsFiles {
  /** PEM: the server's private key, its certificate, and the CA that signs clients' certificates. */
  key: string | Buffer;
  cert: string | Buffer;
  /** When given, clients must present a certificate this CA signed (qemu: tls-creds-x509 with client-cert.pem). */
  ca?: string | Buffer;
}

interface ExportEntry {
  opening: Promise<OpenExport>;
  connections: Set<Socket>;
}

export class NbdServer {
  private readonly log: Logger | undefined;
  private readonly resolver: NbdServerOptions['resolve'];
  private readonly listeners: Array<{ server: Server; path?: string }> = [];
  private readonly exports = new Map<string, ExportEntry>();
  private readonly sockets = new Set<Socket>();
  private closing = false;
  private readonly counters: NbdStats = { connectionsTotal: 0, connectionsOpen: 0, requests: 0, bytesRead: 0, readRuns: 0 };

  constructor(options: NbdServerOptions) {
    this.log = options.log;
    this.resolver = options.resolve;
  }

  /** Listens on a unix socket; a stale socket file (nobody answering) is replaced. */
  async listenUnix(path: string): Promise<void> {
    await removeStaleSocket(path);
    const server = this.makeServer(undefined);
    await listen(server, () => server.listen(path));
    this.listeners.push({ server, path });
  }

  /**
   * Listens on TCP and returns the port (port 0 picks one). Without tls only a loopback host is
   * accepted; with tls every connection must start TLS before anything else.
   */
  async listenTcp(options: { host: string; port: number; tls?: TlsFiles }): Promise<number> {
    if (!options.tls && !isLoopback(options.host)) {
      throw ErrInvalidArgument(`NBD on ${options.host} needs TLS: only loopback addresses are served in the clear`);
    }
    const server = this.makeServer(options.tls);
    await listen(server, () => server.listen(options.port, options.host));
    this.listeners.push({ server });
    const address = server.address();
    return typeof address === 'object' && address ? address.port : options.port;
  }

  stats(): NbdStats {
    return { ...this.counters, connectionsOpen: this.sockets.size };
  }

  /** Closes the export's connections and its image. A later handshake for the name asks the resolver again. */
  async dropExport(name: string): Promise<void> {
    const entry = this.exports.get(name);
    if (!entry) return;
    this.exports.delete(name);
    for (const s of entry.connections) s.destroy();
    await entry.opening.then((o) => o.image.close(), () => undefined);
  }

  /** Stops listening, closes every connection and image. */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.listeners.map(({ server }) => new Promise<void>((r) => server.close(() => r()))));
    for (const s of this.sockets) s.destroy();
    await Promise.all([...this.exports.keys()].map((name) => this.dropExport(name)));
    await Promise.all(this.listeners.filter((l) => l.path).map((l) => unlink(l.path!).catch(() => undefined)));
    this.listeners.length = 0;
  }

  private makeServer(tls: TlsFiles | undefined): Server {
    const tlsContext = tls ? { context: createSecureContext({ key: tls.key, cert: tls.cert, ca: tls.ca }), requestCert: tls.ca !== undefined } : undefined;
    // Half-open: a client that hangs up its sending side still gets the replies to what it sent;
    // the connection closes once they are written (closeAfterFlush).
    const server = createServer({ allowHalfOpen: true }, (socket) => { void this.serve(socket, tlsContext); });
    server.on('error', (err) => this.log?.error({ err }, 'nbd: listener failed'));
    return server;
  }

  private async serve(socket: Socket, tls: HandshakeContext['tls']): Promise<void> {
    this.counters.connectionsTotal++;
    this.sockets.add(socket);
    socket.on('error', () => undefined); // reported through the reader; never an unhandled 'error'
    if (socket.remoteAddress) socket.setNoDelay(true);
    let entry: ExportEntry | undefined;
    // What replies are written to: the socket, or the TLS socket on it after STARTTLS.
    let top: Duplex = socket;
    try {
      if (this.closing) return;
      const ctx: HandshakeContext = {
        resolve: (name) => this.resolver(name),
        open: async (exp) => {
          entry = this.entryFor(exp);
          entry.connections.add(socket);
          return entry.opening;
        },
        tls,
        shuttingDown: () => this.closing,
      };
      const agreed = await handshake(socket, ctx);
      if (!agreed) return;
      top = agreed.socket;
      this.log?.debug({ export: agreed.session.exp.exp.name, structured: agreed.session.structured }, 'nbd: client connected');
      await transmission(agreed.session, agreed.socket, agreed.reader, {
        stats: this.counters,
        onError: (err, what) => this.log?.error({ err, export: agreed.session.exp.exp.name }, `nbd: ${what} failed`),
      });
    } catch (err) {
      if (!(err instanceof ConnectionEnded)) this.log?.warn({ err: (err as Error).message }, 'nbd: connection closed');
    } finally {
      entry?.connections.delete(socket);
      // Replies already written (the error that answers a bad request among them) go out before the close.
      await closeAfterFlush(top, socket);
      this.sockets.delete(socket);
    }
  }

  private entryFor(exp: NbdExport): ExportEntry {
    let entry = this.exports.get(exp.name);
    if (!entry) {
      const opening = exp.open().then((image) => ({ exp, image }));
      entry = { opening, connections: new Set() };
      const e = entry;
      // A failed open is forgotten, so the next client tries again.
      opening.catch((err: unknown) => {
        this.log?.error({ err, export: exp.name }, 'nbd: export cannot be opened');
        if (this.exports.get(exp.name) === e) this.exports.delete(exp.name);
      });
      this.exports.set(exp.name, entry);
    }
    return entry;
  }
}

/** How long a closing connection may take to hand its last replies to a client that does not read them. */
const CloseGraceMs = 5000;

/** Ends the connection once what was written to it has gone out (at most CloseGraceMs), then destroys it. */
async function closeAfterFlush(top: Duplex, socket: Socket): Promise<void> {
  if (!socket.destroyed) {
    top.end();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      finished(top, { readable: false }).catch(() => undefined),
      new Promise<void>((resolve) => { timer = setTimeout(resolve, CloseGraceMs); }),
    ]);
    clearTimeout(timer);
  }
  top.destroy();
  socket.destroy();
}

function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || host.toLowerCase().startsWith('::ffff:127.');
  return false;
}

function listen(server: Server, start: () => void): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new LifeboatError('unavailable', `NBD listen failed: ${err.message}`, { cause: err })));
    server.once('listening', () => resolve());
    start();
  });
}

/** Removes a unix socket file nobody answers on; refuses a live one or anything that is not a socket. */
async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) throw ErrInvalidArgument(`${path} exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const c = connect(path);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
  if (live) throw new LifeboatError('conflict', `${path}: another server is listening there`);
  await unlink(path);
}
