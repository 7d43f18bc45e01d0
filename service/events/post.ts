/**
 * One delivery attempt: a POST of the signed body, answered or not within timeoutMs (connect, send
 * and the whole answer). Never follows a redirect: a 3xx is a failed attempt whose error names where
 * it pointed. Reads at most MaxExcerptBytes of the answer (the attempt log keeps them) and drops the
 * rest, so a receiver answering with a huge or endless body costs nothing. Never throws: every
 * failure is in the result.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

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

export function postOnce(url: string, headers: Record<string, string>, body: string, timeoutMs = DefaultAttemptTimeoutMs): Promise<AttemptResult> {
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
    const send = u.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(u, { method: 'POST', headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) }, agent: false }, (res) => {
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
