/** Prometheus metrics of one service process (prom-client), served at /metrics on the API port. */
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface Metrics {
  registry: Registry;
  httpRequests: Counter<'surface' | 'status'>;
  commits: Counter<'status'>;
  merges: Counter<'outcome'>;
  commitToApplied: Histogram;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'lifeboat_' });
  return {
    registry,
    httpRequests: new Counter({ name: 'lifeboat_http_requests_total', help: 'HTTP requests by surface and status', labelNames: ['surface', 'status'], registers: [registry] }),
    commits: new Counter({ name: 'lifeboat_commits_total', help: 'log commits by result', labelNames: ['status'], registers: [registry] }),
    merges: new Counter({ name: 'lifeboat_merges_total', help: 'logs merged by outcome (applied, duplicate, rejected)', labelNames: ['outcome'], registers: [registry] }),
    commitToApplied: new Histogram({ name: 'lifeboat_commit_to_applied_seconds', help: 'time from commit to applied', buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300], registers: [registry] }),
  };
}
