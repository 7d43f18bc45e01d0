/**
 * The agent's HTTPS client keeps connections alive: requests with the same TLS identity (CA, key,
 * certificate) go over the connections already open instead of a new handshake each, the client
 * certificate is still presented and verified on them, streamed uploads and a server that closes
 * the connection after its answer (Connection: close) work, and the CA fetch (insecure, pinning what
 * it gets) never shares a pooled connection. A real HTTPS server with mutual TLS, certificates from
 * the service's CA code.
 */
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeKeyAndCsr } from '../../agent/enroll/csr.js';
import { closeConnections, send, sendOk } from '../../agent/transport/http-client.js';
import type { TlsOptions } from '../../agent/transport/http-client.js';
import { createCa, issueClientCert, issueServerCert, loadCa, parseCsr } from '../../service/trust/ca.js';

let server: Server;
let base: string;
let tls: TlsOptions;
let caPem: string;
/** TLS connections the server accepted, and per request whether its client certificate was verified. */
let connections = 0;
const seen: { authorized: boolean; body: number }[] = [];

beforeAll(async () => {
  const ca = await loadCa(...Object.values(await createCa('reuse test CA')) as [string, string]);
  caPem = ca.certPem;
  const serverCert = await issueServerCert(ca, ['localhost'], 1);
  const client = await makeKeyAndCsr('hv01.test');
  const clientCert = await issueClientCert(ca, await parseCsr(client.csrPem), 'hv01.test', 1);
  tls = { ca: caPem, key: client.keyPem, cert: clientCert.pem };
  server = createServer({ key: serverCert.keyPem, cert: serverCert.certPem, ca: [caPem], requestCert: true, rejectUnauthorized: false }, (req, res) => {
    let body = 0;
    req.on('data', (d: Buffer) => { body += d.length; });
    req.on('end', () => {
      seen.push({ authorized: (req.socket as TLSSocket).authorized, body });
      res.writeHead(200, { 'content-type': 'application/json', ...(req.url === '/close' ? { connection: 'close' } : {}) });
      res.end('{}');
    });
  });
  server.on('secureConnection', () => { connections++; });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `https://localhost:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  closeConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

describe('agent HTTPS connections', () => {
  it('reuses one connection for requests one after another, presenting the client certificate on each', async () => {
    connections = 0;
    seen.length = 0;
    for (let i = 0; i < 5; i++) await sendOk({ method: 'POST', url: `${base}/x`, body: Buffer.from('{"a":1}'), tls });
    await sendOk({ method: 'PUT', url: `${base}/upload`, body: Readable.from([Buffer.alloc(100_000, 1), Buffer.alloc(50_000, 2)]), headers: { 'content-length': '150000' }, tls });
    expect(connections).toBe(1);
    expect(seen).toHaveLength(6);
    expect(seen.every((s) => s.authorized)).toBe(true);
    expect(seen.at(-1)!.body).toBe(150_000);
  });

  it('opens connections for requests at once and reuses them afterwards', async () => {
    connections = 0;
    await Promise.all(Array.from({ length: 3 }, () => sendOk({ method: 'GET', url: `${base}/x`, tls })));
    const opened = connections;
    expect(opened).toBeGreaterThanOrEqual(1);
    expect(opened).toBeLessThanOrEqual(3);
    await Promise.all(Array.from({ length: 3 }, () => sendOk({ method: 'GET', url: `${base}/x`, tls })));
    expect(connections).toBe(opened);
  });

  it('goes on with a new connection after the server closed one', async () => {
    closeConnections();
    connections = 0;
    await sendOk({ method: 'GET', url: `${base}/close`, tls });
    await sendOk({ method: 'GET', url: `${base}/x`, tls });
    await sendOk({ method: 'GET', url: `${base}/x`, tls });
    expect(connections).toBe(2);
  });

  it('fetches the CA over a connection of its own, with the server certificate to pin', async () => {
    await sendOk({ method: 'GET', url: `${base}/x`, tls });
    connections = 0;
    const res = await send({ method: 'GET', url: `${base}/v1/ca`, tls: { insecure: true } });
    expect(res.status).toBe(200);
    expect(res.peerCertificateDer?.length).toBeGreaterThan(100);
    expect(connections).toBe(1);
    await sendOk({ method: 'GET', url: `${base}/x`, tls });
    expect(connections).toBe(1);
  });

  it('answers with another identity over other connections (the pinned CA only: no client certificate)', async () => {
    connections = 0;
    seen.length = 0;
    await sendOk({ method: 'GET', url: `${base}/x`, tls: { ca: caPem } });
    expect(connections).toBe(1);
    expect(seen[0]!.authorized).toBe(false);
  });
});
