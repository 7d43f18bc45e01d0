/**
 * One delivery attempt: a POST of the signed body, answered or not within timeoutMs (connect, send
 * and the whole answer). Never follows a redirect: a 3xx is a failed attempt whose error names where
 * it pointed. Reads at most MaxExcerptBytes of the answer (the attempt log keeps them) and drops the
 * rest, so a receiver answering with a huge or endless body costs nothing. Never throws: every
 * failure is in the result.
 *
 * publicOnly: the request may reach only public (unicast) addresses: an IP literal is checked before
 * connecting, a name at resolution (the address connected to is the one checked, so a name that
 * resolves differently later cannot slip through). For receivers a tenant chose, so that a tenant
 * cannot make the service call the hoster's own loopback, private or link-local services.
 */
import type { LookupAddress, LookupAllOptions, LookupOneOptions } from 'node:dns';
import { lookup as dnsLookup } from 'node:dns';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import ipaddr from 'ipaddr.js';

export const DefaultAttemptTimeoutMs = 15_000;
export const MaxExcerptBytes = 1024;

export interface AttemptResult {
  /** 2xx. */
  ok: boolean;
  /** The HTTP status, null when no answer came. */
  status: number | null;
  /** Why it failed (null when ok). */
  error: string | null;
  /** The start of the answer's body, as UTF-8. */
  excerpt: string;
  latencyMs: number;
}

/** Why an address may not be reached by a publicOnly request, or undefined when it may. */
export function nonPublic(address: string): string | undefined {
  if (!ipaddr.isValid(address)) return undefined;
  const range = ipaddr.process(address).range();
  return range === 'unicast' ? undefined : `${address} is a ${range} address`;
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** dns.lookup, refusing any answer that is not a public address. */
function publicLookup(hostname: string, options: LookupOneOptions | LookupAllOptions, callback: LookupCallback): void {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, '');
    const refused = addresses.map((a) => nonPublic(a.address)).find((why) => why !== undefined);
    if (refused) return callback(Object.assign(new Error(`${hostname}: ${refused}; this receiver may reach public addresses only`), { code: 'EPRIVATE' }), '');
    if ((options as LookupAllOptions).all) return callback(null, addresses);
    callback(null, addresses[0]!.address, addresses[0]!.family);
  });
}

export function postOnce(url: string, headers: Record<string, string>, body: string, timeoutMs = DefaultAttemptTimeoutMs, options: { publicOnly?: boolean } = {}): Promise<AttemptResult> {
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  return new Promise((resolve) => {
    let done = false;
    const finish = (r: Omit<AttemptResult, 'latencyMs'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ ...r, latencyMs: elapsed() });
      req.destroy();
    };
    const u = new URL(url);
    const literal = options.publicOnly ? nonPublic(u.hostname.replace(/^\[|\]$/g, '')) : undefined;
    if (literal) {
      resolve({ ok: false, status: null, error: `EPRIVATE: ${literal}; this receiver may reach public addresses only`, excerpt: '', latencyMs: 0 });
      return;
    }
    const send = u.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(u, { method: 'POST', headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) }, agent: false, ...(options.publicOnly ? { lookup: publicLookup } : {}) }, (res) => {
      const status = res.statusCode ?? 0;
      const parts: Buffer[] = [];
      let size = 0;
      const answer = () => {
        const excerpt = Buffer.concat(parts).subarray(0, MaxExcerptBytes).toString('utf8');
        if (status >= 200 && status < 300) return finish({ ok: true, status, error: null, excerpt });
        if (status >= 300 && status < 400) {
          const to = String(res.headers.location ?? '(no Location)').slice(0, 200);
          return finish({ ok: false, status, error: `redirect to ${to} not followed (give the final URL)`, excerpt });
        }
        return finish({ ok: false, status, error: `HTTP ${status}`, excerpt });
      };
      res.on('data', (b: Buffer) => {
        parts.push(b);
        size += b.length;
        if (size >= MaxExcerptBytes) answer();
      });
      res.on('end', answer);
      res.on('error', (e) => finish({ ok: false, status, error: e.message, excerpt: '' }));
    });
    const timer = setTimeout(() => finish({ ok: false, status: null, error: `no answer within ${timeoutMs} ms`, excerpt: '' }), timeoutMs);
    req.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, status: null, error: e.code ? `${e.code}: ${e.message}` : e.message, excerpt: '' }));
    req.end(body);
  });
}
