import { describe, expect, it } from 'vitest';
import { bestMatch, normalizePattern, normalizeServerName, patternMatches } from './patterns.js';

describe('server-name patterns', () => {
  it('accepts at most one * and refuses anything else with the reason', () => {
    for (const p of ['*.contoso.com', 'host*', '*', 'hv01.contoso.com', 'hv*.contoso.com', 'HV*.Contoso.COM']) expect(() => normalizePattern(p)).not.toThrow();
    expect(() => normalizePattern('*.*.com')).toThrow(/at most one is allowed/);
    expect(() => normalizePattern('**')).toThrow(/at most one/);
    expect(() => normalizePattern('hv_01.contoso.com')).toThrow(/may hold only/);
    expect(() => normalizePattern('hv01..com')).toThrow(/empty label/);
    expect(() => normalizePattern('')).toThrow(/1 to 253/);
    expect(() => normalizePattern('a/b')).toThrow(/may hold only/);
  });

  it('matches case-insensitively; * spans any characters, dots included, or none', () => {
    const m = (p: string, n: string) => patternMatches(normalizePattern(p), normalizeServerName(n));
    expect(m('*.Contoso.com', 'HV01.contoso.COM')).toBe(true);
    expect(m('*.contoso.com', 'a.b.contoso.com')).toBe(true);
    expect(m('*.contoso.com', 'contoso.com')).toBe(false);
    expect(m('*.contoso.com', 'evilcontoso.com')).toBe(false);
    expect(m('host*', 'host')).toBe(true);
    expect(m('host*', 'host12.example')).toBe(true);
    expect(m('host*', 'ahost1')).toBe(false);
    expect(m('*', 'anything.at.all')).toBe(true);
    expect(m('hv*.contoso.com', 'hv.contoso.com')).toBe(true);
    expect(m('hv01.contoso.com', 'hv011.contoso.com')).toBe(false);
  });

  it('prefers an exact entry, then the most literal characters, then the oldest', () => {
    const entries = [{ pattern: '*', id: 1 }, { pattern: '*.contoso.com', id: 2 }, { pattern: 'hv*.contoso.com', id: 3 }, { pattern: 'hv01.contoso.com', id: 4 }, { pattern: 'hv*.contoso.com', id: 5 }];
    expect(bestMatch(entries, 'hv01.contoso.com')?.id).toBe(4);
    expect(bestMatch(entries, 'hv02.contoso.com')?.id).toBe(3);
    expect(bestMatch(entries, 'db.contoso.com')?.id).toBe(2);
    expect(bestMatch(entries, 'x.fabrikam.com')?.id).toBe(1);
    expect(bestMatch(entries.slice(1), 'x.fabrikam.com')).toBeUndefined();
  });

  it('validates server names as DNS names', () => {
    expect(normalizeServerName('HV01.Contoso.com.')).toBe('hv01.contoso.com');
    for (const bad of ['', 'a b', '-a.com', 'a-.com', 'a..b', 'x'.repeat(64) + '.com', '*.contoso.com', 'a/b']) expect(() => normalizeServerName(bad)).toThrow();
  });
});
