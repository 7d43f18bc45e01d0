/**
 * The handshake phase, server side (docs/formats/nbd.md "Handshake"): fixed newstyle greeting, then
 * option haggling until NBD_OPT_GO (or NBD_OPT_EXPORT_NAME) picks an export, or the client aborts.
 *
 * Input: a connected socket. Output: the agreed Session with the socket and reader to carry on with
 * (a new TLS socket after NBD_OPT_STARTTLS), or undefined when the handshake ended without an export
 * (abort, refused name on EXPORT_NAME, client gone). Failure: malformed bytes throw (NbdProtocolError,
 * ConnectionEnded); the caller closes the connection. Names the resolver does not know get
 * NBD_REP_ERR_UNKNOWN, and nothing about any other export is revealed.
 */
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { Duplex } from 'node:stream';
import * as P from '../../../shared/nbd/protocol.js';
import { ByteReader } from './byte-reader.js';
import {
  MaxOptionBytes, MaxOptions, MaxPayloadBytes, MinimumBlockBytes, PreferredBlockBytes,
  type NbdExport, type OpenExport, type Session,
} from './types.js';

export interface HandshakeContext {
  resolve(name: string): Promise<NbdExport | undefined>;
  /** Opens (or shares) the export's image; throws when it cannot be opened. */
  open(exp: NbdExport): Promise<OpenExport>;
  /** FORCEDTLS when set: every option but STARTTLS and ABORT waits for TLS. */
  tls: { context: SecureContext; requestCert: boolean } | undefined;
  shuttingDown(): boolean;
}

export interface HandshakeResult { session: Session; socket: Duplex; reader: ByteReader }

/** The id our base:allocation context has in NBD_REP_META_CONTEXT and BLOCK_STATUS replies. */
export const AllocationContextId = 1;

/** Transmission flags of a read-only export. */
export function transmissionFlags(structured: boolean): number {
  return P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_READ_ONLY | P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_CAN_MULTI_CONN
    | (structured ? P.NBD_FLAG_SEND_DF : 0);
}

export async function handshake(socket: Socket, ctx: HandshakeContext): Promise<HandshakeResult | undefined> {
  let sock: Duplex = socket;
  let reader = new ByteReader(socket);
  const send = (b: Buffer) => { sock.write(b); };
  send(P.encodeGreeting(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES));
  const clientFlags = P.decodeClientFlags(await reader.read(P.ClientFlagsBytes));
  if ((clientFlags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) !== 0) {
    throw new P.NbdProtocolError(`unknown client flags 0x${clientFlags.toString(16)}`);
  }
  const noZeroes = (clientFlags & P.NBD_FLAG_C_NO_ZEROES) !== 0;

  // State the options build up; STARTTLS resets it.
  let tlsDone = false;
  let structured = false;
  let meta: { exportName: string; selected: boolean } | undefined;

  for (let count = 0; count < MaxOptions; count++) {
    const { option, length } = P.decodeOptionHeader(await reader.read(P.OptionHeaderBytes));
    const reply = (type: number, data?: Buffer) => send(P.encodeOptionReply(option, type, data));
    const refuse = (type: number, message: string) => send(P.encodeOptionError(option, type, message));
    if (length > MaxOptionBytes) {
      await reader.skip(length);
      if (option === P.NBD_OPT_EXPORT_NAME) return undefined;
      refuse(P.NBD_REP_ERR_TOO_BIG, `option data of ${length} bytes is larger than ${MaxOptionBytes}`);
      continue;
    }
    const data = length > 0 ? Buffer.from(await reader.read(length)) : Buffer.alloc(0);

    if (option === P.NBD_OPT_ABORT) {
      reply(P.NBD_REP_ACK);
      return undefined;
    }
    if (ctx.tls && !tlsDone && option !== P.NBD_OPT_STARTTLS) {
      if (option === P.NBD_OPT_EXPORT_NAME) return undefined; // cannot be refused with an error
      refuse(P.NBD_REP_ERR_TLS_REQD, 'this server requires TLS (NBD_OPT_STARTTLS) first');
      continue;
    }
    if (ctx.shuttingDown()) {
      if (option === P.NBD_OPT_EXPORT_NAME) return undefined;
      refuse(P.NBD_REP_ERR_SHUTDOWN, 'the server is shutting down');
      continue;
    }

    switch (option) {
      case P.NBD_OPT_STARTTLS: {
        if (!ctx.tls) { refuse(P.NBD_REP_ERR_POLICY, 'TLS is not offered on this listener'); break; }
        if (length !== 0 || tlsDone) { refuse(P.NBD_REP_ERR_INVALID, tlsDone ? 'TLS is already running' : 'NBD_OPT_STARTTLS takes no data'); break; }
        reply(P.NBD_REP_ACK);
        const rest = reader.detach();
        if (rest.length > 0) socket.unshift(rest);
        const secure = new TLSSocket(socket, {
          isServer: true,
          secureContext: ctx.tls.context,
          requestCert: ctx.tls.requestCert,
          rejectUnauthorized: ctx.tls.requestCert,
        });
        await new Promise<void>((resolve, reject) => {
          secure.once('secure', resolve);
          secure.once('error', reject);
          secure.once('close', () => reject(new Error('TLS handshake ended')));
        });
        secure.on('error', () => undefined); // later failures end the reader; no unhandled 'error'
        sock = secure;
        reader = new ByteReader(secure);
        tlsDone = true;
        structured = false;
        meta = undefined;
        break;
      }
      case P.NBD_OPT_LIST:
        // Export names are per failover and per tenant: no client may learn the others'.
        if (length !== 0) refuse(P.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
        else refuse(P.NBD_REP_ERR_POLICY, 'exports are not listed; ask for yours by name');
        break;
      case P.NBD_OPT_STRUCTURED_REPLY:
        if (length !== 0) refuse(P.NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
        else if (structured) refuse(P.NBD_REP_ERR_INVALID, 'structured replies are already negotiated');
        else { structured = true; reply(P.NBD_REP_ACK); }
        break;
      case P.NBD_OPT_LIST_META_CONTEXT:
      case P.NBD_OPT_SET_META_CONTEXT: {
        const set = option === P.NBD_OPT_SET_META_CONTEXT;
        if (set) meta = undefined; // replaced even when this one fails
        if (!structured) { refuse(P.NBD_REP_ERR_INVALID, 'negotiate NBD_OPT_STRUCTURED_REPLY first'); break; }
        let req: P.MetaContextRequest;
        try { req = P.decodeMetaContextRequest(data); } catch (err) {
          refuse(P.NBD_REP_ERR_INVALID, (err as Error).message);
          break;
        }
        if (!(await ctx.resolve(req.name))) { refuse(P.NBD_REP_ERR_UNKNOWN, 'no such export'); break; }
        const match = set
          ? req.queries.includes(P.BaseAllocation)
          : req.queries.length === 0 || req.queries.some((q) => q === 'base:' || q === P.BaseAllocation);
        if (match) reply(P.NBD_REP_META_CONTEXT, P.encodeMetaContext(set ? AllocationContextId : 0, P.BaseAllocation));
        if (set) meta = { exportName: req.name, selected: match };
        reply(P.NBD_REP_ACK);
        break;
      }
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO: {
        let req: P.InfoRequest;
        try { req = P.decodeInfoRequest(data); } catch (err) {
          refuse(P.NBD_REP_ERR_INVALID, (err as Error).message);
          break;
        }
        const exp = await ctx.resolve(req.name);
        if (!exp) { refuse(P.NBD_REP_ERR_UNKNOWN, 'no such export'); break; }
        let opened: OpenExport | undefined;
        if (option === P.NBD_OPT_GO) {
          try { opened = await ctx.open(exp); } catch {
            refuse(P.NBD_REP_ERR_UNKNOWN, 'the export cannot be opened now');
            break;
          }
        }
        const flags = transmissionFlags(structured);
        reply(P.NBD_REP_INFO, P.encodeInfo({ type: P.NBD_INFO_EXPORT, size: exp.size, transmissionFlags: flags }));
        if (req.requests.includes(P.NBD_INFO_NAME)) reply(P.NBD_REP_INFO, P.encodeInfo({ type: P.NBD_INFO_NAME, name: exp.name }));
        if (req.requests.includes(P.NBD_INFO_DESCRIPTION) && exp.description) {
          reply(P.NBD_REP_INFO, P.encodeInfo({ type: P.NBD_INFO_DESCRIPTION, description: exp.description }));
        }
        reply(P.NBD_REP_INFO, P.encodeInfo({ type: P.NBD_INFO_BLOCK_SIZE, minimum: MinimumBlockBytes, preferred: PreferredBlockBytes, maximum: MaxPayloadBytes }));
        reply(P.NBD_REP_ACK);
        if (opened) return { session: sessionFor(opened, structured, meta, req.name), socket: sock, reader };
        break;
      }
      case P.NBD_OPT_EXPORT_NAME: {
        let name: string;
        try { name = data.toString('utf8'); } catch { return undefined; }
        const exp = await ctx.resolve(name);
        if (!exp) return undefined; // the spec: terminate the session
        const opened = await ctx.open(exp);
        const flags = transmissionFlags(structured);
        send(P.encodeExportNameReply(exp.size, flags, noZeroes));
        return { session: sessionFor(opened, structured, meta, name), socket: sock, reader };
      }
      default:
        refuse(P.NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
    }
  }
  throw new P.NbdProtocolError(`more than ${MaxOptions} options`);
}

function sessionFor(exp: OpenExport, structured: boolean, meta: { exportName: string; selected: boolean } | undefined, name: string): Session {
  const allocation = structured && meta?.selected === true && meta.exportName === name;
  return { exp, structured, allocationContext: allocation ? AllocationContextId : undefined, transmissionFlags: transmissionFlags(structured) };
}
