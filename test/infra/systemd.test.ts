/**
 * infra/systemd: every unit passes `systemd-analyze verify` (templates as an instance), which needs no
 * running systemd: it loads the unit as systemd would and reports unknown keys, bad values and
 * commands that cannot be executed. Any message about the unit fails the test, not only a non-zero
 * exit (systemd-analyze exits 0 on unknown keys). Then what it cannot see: each ExecStart runs a real
 * subcommand, the service units run as lifeboat with their config where they may read it.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkCommandLine } from './cli.js';

const repo = resolve(import.meta.dirname, '..', '..');
const unitDir = resolve(repo, 'infra/systemd');
const units = readdirSync(unitDir).filter((f) => f.endsWith('.service')).sort();
const analyzer = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => existsSync(p));
const scratch = mkdtempSync(join(tmpdir(), 'lifeboat-systemd-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Messages of systemd-analyze verify about one unit file (a template is verified as NAME@1). */
function verify(file: string): Promise<string[]> {
  const dir = mkdtempSync(join(scratch, 'u-'));
  const name = basename(file);
  copyFileSync(file, join(dir, name));
  const target = join(dir, name.replace(/@\.service$/, '@1.service'));
  return new Promise((res) => {
    execFile(analyzer!, ['verify', '--man=no', target], { env: { ...process.env, SYSTEMD_LOG_COLOR: '0' } }, (err, stdout, stderr) => {
      const lines = `${stdout}${stderr}`.split('\n').filter((l) => l.trim().length > 0);
      const code = err ? (err as NodeJS.ErrnoException & { code?: number }).code : 0;
      res(code === 0 && lines.length === 0 ? [] : [`exit ${String(code)}`, ...lines]);
    });
  });
}

/** The unit as sections of key → values (keys may repeat). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let cur: Map<string, string[]> | undefined;
  for (const line of text.replace(/\\\n/g, ' ').split('\n')) {
    const t = line.trim();
    if (t === '' || t.startsWith('#') || t.startsWith(';')) continue;
    const sec = /^\[([A-Za-z]+)\]$/.exec(t);
    if (sec) {
      cur = new Map();
      sections.set(sec[1]!, cur);
      continue;
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(t);
    if (!kv || !cur) throw new Error(`cannot parse unit line ${JSON.stringify(t)}`);
    cur.set(kv[1]!, [...(cur.get(kv[1]!) ?? []), kv[2]!]);
  }
  return sections;
}

describe('infra/systemd', () => {
  it('has units for serve, workers, a failover host and the agent', () => {
    expect(units).toEqual(['lifeboat-agent.service', 'lifeboat-failover-host.service', 'lifeboat-service.service', 'lifeboat-worker@.service']);
  });

  it.skipIf(analyzer === undefined).each(units)('%s passes systemd-analyze verify', async (unit) => {
    expect(await verify(join(unitDir, unit))).toEqual([]);
  });

  it.skipIf(analyzer === undefined)('systemd-analyze verify reports a unit with an unknown key or a bad value', async () => {
    const bad = join(scratch, 'lifeboat-bad.service');
    writeFileSync(bad, readFileSync(join(unitDir, 'lifeboat-worker@.service'), 'utf8').replace('Restart=on-failure', 'Restart=sometimes\nRestartSecs=5'));
    const out = (await verify(bad)).join('\n');
    expect(out).toMatch(/RestartSecs/);
    expect(out).toMatch(/restart specifier/i);
  });

  it.each(units)('%s runs a real subcommand as its user, writing only where it may', async (unit) => {
    const u = parseUnit(readFileSync(join(unitDir, unit), 'utf8'));
    expect([...u.keys()]).toEqual(['Unit', 'Service', 'Install']);
    const svc = u.get('Service')!;
    const exec = svc.get('ExecStart')!;
    expect(exec).toHaveLength(1);
    const words = exec[0]!.split(/\s+/);
    expect(words[0]).toBe('/usr/bin/env');
    const program = words[1] as 'lifeboat-service' | 'lifeboat-agent';
    expect(['lifeboat-service', 'lifeboat-agent']).toContain(program);
    expect(await checkCommandLine(program === 'lifeboat-agent' ? 'agent' : 'service', words.slice(2))).toEqual([]);
    expect(svc.get('User')).toEqual(['lifeboat']);
    expect(u.get('Install')!.get('WantedBy')).toEqual(['multi-user.target']);
    const env = Object.fromEntries((svc.get('Environment') ?? []).map((e) => e.split('=', 2) as [string, string]));
    const writable = [...(svc.get('ReadWritePaths') ?? []), ...(svc.get('StateDirectory') ?? []).map((d) => `/var/lib/${d}`)];
    if (program === 'lifeboat-service') {
      expect(writable).toContain(dirname(env.LIFEBOAT_CONFIG!));
    } else {
      expect(writable).toContain(env.LIFEBOAT_AGENT_STATE);
      expect(svc.get('AmbientCapabilities')).toEqual(['CAP_DAC_READ_SEARCH']);
    }
    // Units that run a failover host let its detached qemu outlive a restart (docs/failover.md).
    const runsHost = words[2] === 'failover-host' || (words[2] === 'serve' && !words.includes('--no-failover-host'));
    expect(svc.get('KillMode')).toEqual(runsHost ? ['process'] : undefined);
  });
});
