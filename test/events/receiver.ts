/**
 * A webhook receiver on loopback (node:http) for the tests. It checks each request's Standard
 * Webhooks signature with its own code, written from the spec and independent of the service's
 * (shared/protocol/standard-webhooks.ts): HMAC-SHA256 under the base64 bytes after `whsec_`, of
 * `<webhook-id>.<webhook-timestamp>.<raw body>`, base64, any `v1,` entry matching.
 * Its behaviour is switched by `mode`: ok (204 after verifying), fail (500 with a long body),
 * hang (never answers), redirect (302 to another receiver).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders, Server } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  headers: IncomingHttpHeaders;
  body: string;
  /** The signature matched under the receiver's secret. */
  verified: boolean;
  payload: { id: string; type: string; timestamp: string; tenant: string | null; data: Record<string, unknown> };
}

export type Mode = 'ok' | 'fail' | 'hang' | 'redirect';

export function verifyStandardWebhook(secret: string, headers: IncomingHttpHeaders, body: string): boolean {
  const id = headers['webhook-id'];
  const ts = headers['webhook-timestamp'];
  const sigs = headers['webhook-signature'];
  if (typeof id !== 'string' || typeof ts !== 'string' || typeof sigs !== 'string') return false;
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  const expected = createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest();
  return sigs.split(' ').some((s) => {
    if (!s.startsWith('v1,')) return false;
    const given = Buffer.from(s.slice(3), 'base64');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

export class Receiver {
  mode: Mode = 'ok';
  secret = '';
  redirectTo = 'http://127.0.0.1:9/elsewhere';
  readonly received: Received[] = [];
  private server: Server | undefined;

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (b: Buffer) => parts.push(b));
      req.on('end', () => {
        const body = Buffer.concat(parts).toString('utf8');
        let payload: Received['payload'];
        try {
          payload = JSON.parse(body) as Received['payload'];
        } catch {
          payload = { id: '', type: '', timestamp: '', tenant: null, data: {} };
        }
        this.received.push({ headers: req.headers, body, verified: verifyStandardWebhook(this.secret, req.headers, body), payload });
        if (this.mode === 'hang') return;
        if (this.mode === 'redirect') return void res.writeHead(302, { location: this.redirectTo }).end();
        if (this.mode === 'fail') return void res.writeHead(500, { 'content-type': 'text/plain' }).end(`receiver broken: ${'x'.repeat(64 * 1024)}`);
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
