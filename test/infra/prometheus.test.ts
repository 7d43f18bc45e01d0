/**
 * infra/prometheus/lifeboat-rules.yml: `promtool check rules` and the rules' unit tests
 * (lifeboat-rules.test.yml, `promtool test rules`) when promtool is installed (Debian: prometheus);
 * always, that it parses as rule groups and that every metric its expressions name is one the service
 * exports: read from the real registry of service/metrics.ts, not from a list kept here.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createMetrics } from '../../service/metrics.js';

const execFileP = promisify(execFile);
const repo = resolve(import.meta.dirname, '..', '..');
const rulesPath = resolve(repo, 'infra/prometheus/lifeboat-rules.yml');
const promtool = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((p) => existsSync(p));

interface Rule { alert?: string; record?: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
const doc = parse(readFileSync(rulesPath, 'utf8')) as { groups: { name: string; rules: Rule[] }[] };

/** Metric names an expression uses (ours, recording rules', and up). */
function metricsIn(expr: string): string[] {
  const withoutStrings = expr.replace(/"[^"]*"/g, '""');
  return [...new Set(withoutStrings.match(/\b(?:lifeboat[_:][A-Za-z0-9_:]*|up)\b(?=\s*[{[)\s]|$)/g) ?? [])];
}

describe('infra/prometheus/lifeboat-rules.yml', () => {
  it.skipIf(promtool === undefined)('passes promtool check rules and its unit tests', async () => {
    const check = await execFileP(promtool!, ['check', 'rules', rulesPath]);
    expect(check.stdout).toMatch(/SUCCESS: \d+ rules found/);
    const unit = await execFileP(promtool!, ['test', 'rules', resolve(repo, 'infra/prometheus/lifeboat-rules.test.yml')]);
    expect(unit.stdout).toMatch(/SUCCESS/);
  });

  it('has the shape of rule groups: named alerts with a severity and a summary, recording rules', () => {
    expect(doc.groups.length).toBeGreaterThan(0);
    const names = new Set<string>();
    for (const g of doc.groups) {
      expect(g.name).toMatch(/^lifeboat\./);
      for (const r of g.rules) {
        expect(typeof r.expr).toBe('string');
        expect((r.alert === undefined) !== (r.record === undefined)).toBe(true);
        if (r.alert !== undefined) {
          expect(names.has(r.alert)).toBe(false);
          names.add(r.alert);
          expect(['critical', 'warning']).toContain(r.labels?.severity);
          expect(r.annotations?.summary).toBeTruthy();
          if (r.for !== undefined) expect(r.for).toMatch(/^\d+[smh]$/);
        } else {
          expect(r.record).toMatch(/^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$/);
        }
      }
    }
    for (const a of ['LifeboatDown', 'LifeboatMergesStalled', 'LifeboatMergesRejected', 'LifeboatApplySlow']) expect(names).toContain(a);
  });

  it('names only metrics the service exports', async () => {
    const m = createMetrics();
    const exported = new Set<string>(['up']);
    for (const metric of await m.registry.getMetricsAsJSON()) {
      exported.add(metric.name);
      if (String(metric.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(metric.name + s);
    }
    const recorded = new Set(doc.groups.flatMap((g) => g.rules.map((r) => r.record).filter((r): r is string => r !== undefined)));
    const used = doc.groups.flatMap((g) => g.rules.flatMap((r) => metricsIn(r.expr)));
    expect(used).toContain('lifeboat_merges_total');
    expect(used.filter((n) => !exported.has(n) && !recorded.has(n))).toEqual([]);
    // And the check itself sees a name that does not exist.
    expect(metricsIn('rate(lifeboat_merge_total{outcome="applied"}[5m])').filter((n) => !exported.has(n))).toEqual(['lifeboat_merge_total']);
  });
});
