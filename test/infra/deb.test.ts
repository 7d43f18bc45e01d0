/**
 * infra/deb/build.sh, built for real with dpkg-deb in a scratch directory (production node_modules
 * copied from this tree, no registry), then checked: dpkg-deb --info (name, version, architecture,
 * dependencies, maintainer scripts), dpkg-deb --contents (the agent under /opt/lifeboat, its command
 * on PATH, its systemd unit; no tests, no service code, no dev dependencies), the agent run from the
 * unpacked package converting a disk that qemu-img then compares, the maintainer scripts run against
 * logging stand-ins for adduser/deluser/install/systemctl (never on this machine's users), and lintian
 * when installed: on the packaging alone (--node-modules none), since over the 16,000 files of
 * node_modules it takes 5 to 11 minutes here. LIFEBOAT_LINTIAN=full runs it on the whole package.
 */
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const execFileP = promisify(execFile);
const repo = resolve(import.meta.dirname, '..', '..');
const build = resolve(repo, 'infra/deb/build.sh');
const lintian = ['/usr/bin/lintian'].find((p) => existsSync(p));
const version = (JSON.parse(readFileSync(resolve(repo, 'package.json'), 'utf8')) as { version: string }).version;
const scratch = mkdtempSync(join(tmpdir(), 'lifeboat-deb-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

async function buildDeb(modules: 'copy' | 'none', compress: string): Promise<string> {
  const out = join(scratch, `out-${modules}`);
  const { stdout } = await execFileP(build, ['--out', out, '--node-modules', modules, '--compress', compress], { maxBuffer: 16 << 20, env: { ...process.env, SOURCE_DATE_EPOCH: '1780000000' } });
  const deb = stdout.trim().split('\n').at(-1)!;
  expect(existsSync(deb)).toBe(true);
  return deb;
}

describe('the agent .deb', () => {
  let deb = '';
  let contents: { mode: string; owner: string; path: string; link?: string }[] = [];
  beforeAll(async () => {
    deb = await buildDeb('copy', 'zstd');
    const { stdout } = await execFileP('dpkg-deb', ['--contents', deb], { maxBuffer: 64 << 20 });
    contents = stdout.trim().split('\n').map((l) => {
      const m = /^(\S+)\s+(\S+)\s+\d+\s+\S+\s+\S+\s+(.+?)(?: -> (.+))?$/.exec(l)!;
      return { mode: m[1]!, owner: m[2]!, path: m[3]!, ...(m[4] ? { link: m[4] } : {}) };
    });
  }, 900_000);

  it('says what it is: name, version, architecture, dependencies, maintainer scripts', async () => {
    const arch = (await execFileP('dpkg', ['--print-architecture'])).stdout.trim();
    expect(deb.endsWith(`lifeboat-agent_${version}_${arch}.deb`)).toBe(true);
    const field = async (f: string) => (await execFileP('dpkg-deb', ['--field', deb, f])).stdout.trim();
    expect(await field('Package')).toBe('lifeboat-agent');
    expect(await field('Version')).toBe(version);
    expect(await field('Architecture')).toBe(arch);
    expect(await field('Depends')).toMatch(/^nodejs \(>= 20\.19\), adduser\b/);
    const info = (await execFileP('dpkg-deb', ['--info', deb])).stdout;
    for (const s of ['postinst', 'prerm', 'postrm']) expect(info).toMatch(new RegExp(`\\d+ bytes,\\s+\\d+ lines\\s+\\*\\s+${s}\\s+#!/bin/sh`));
  });

  it('installs the agent under /opt/lifeboat, its command and its unit, owned by root', () => {
    const byPath = new Map(contents.map((c) => [c.path, c]));
    expect(byPath.get('./opt/lifeboat/bin/lifeboat-agent.js')?.mode).toBe('-rwxr-xr-x');
    expect(byPath.get('./usr/bin/lifeboat-agent')?.link).toBe('/opt/lifeboat/bin/lifeboat-agent.js');
    expect(byPath.get('./lib/systemd/system/lifeboat-agent.service')?.mode).toBe('-rw-r--r--');
    expect(byPath.has('./opt/lifeboat/agent/cli/main.ts')).toBe(true);
    expect(byPath.has('./opt/lifeboat/shared/errors.ts')).toBe(true);
    expect(byPath.has('./opt/lifeboat/node_modules/tsx/package.json')).toBe(true);
    expect(byPath.has('./opt/lifeboat/package.json')).toBe(true);
    expect(byPath.has('./usr/share/doc/lifeboat-agent/copyright')).toBe(true);
    expect(contents.every((c) => c.owner === 'root/root')).toBe(true);
    const paths = contents.map((c) => c.path);
    expect(paths.filter((p) => p.endsWith('.test.ts') && !p.includes('/node_modules/'))).toEqual([]);
    expect(paths.filter((p) => p.startsWith('./opt/lifeboat/service/'))).toEqual([]);
    for (const dev of ['vitest', 'typescript', 'eslint', 's3rver', 'azurite']) expect(byPath.has(`./opt/lifeboat/node_modules/${dev}/`)).toBe(false);
    expect(paths.filter((p) => p.endsWith('.node') && /musl/.test(p))).toEqual([]);
  });

  it('runs from the unpacked package: converts a disk that qemu-img reads back identical', async () => {
    const root = join(scratch, 'root');
    await execFileP('dpkg-deb', ['-x', deb, root]);
    expect(readFileSync(join(root, 'lib/systemd/system/lifeboat-agent.service'), 'utf8')).toBe(readFileSync(resolve(repo, 'infra/systemd/lifeboat-agent.service'), 'utf8'));
    const agent = join(root, 'opt/lifeboat/bin/lifeboat-agent.js');
    const env = { PATH: process.env.PATH, HOME: scratch };
    const help = await execFileP(process.execPath, [agent, '--help'], { cwd: scratch, env });
    expect(help.stdout).toMatch(/^Usage: lifeboat-agent/);
    const raw = join(scratch, 'disk.raw');
    await execFileP('qemu-img', ['create', '-f', 'raw', raw, '64M']);
    await execFileP('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 3M', '-c', 'write -P 0xc3 40M 64k', raw]);
    const vhdx = join(scratch, 'disk.vhdx');
    await execFileP(process.execPath, [agent, 'disk', 'convert', raw, vhdx, '--format', 'vhdx'], { cwd: scratch, env });
    await execFileP('qemu-img', ['compare', '-f', 'raw', '-F', 'vhdx', raw, vhdx]);
  }, 300_000);
});

describe('the maintainer scripts', () => {
  /** Runs a script with stand-ins for the commands that change the system; returns what they were asked. */
  async function run(script: string, args: string[], users: string[]): Promise<string[]> {
    const bin = mkdtempSync(join(scratch, 'bin-'));
    const log = join(bin, 'calls.log');
    writeFileSync(log, '');
    const stub = (name: string, body = '') => {
      writeFileSync(join(bin, name), `#!/bin/sh\necho "${name} $*" >> ${log}\n${body}\n`);
      chmodSync(join(bin, name), 0o755);
    };
    stub('getent', `case " ${users.join(' ')} " in *" $2 "*) exit 0 ;; *) exit 2 ;; esac`);
    for (const c of ['adduser', 'deluser', 'install', 'systemctl', 'rm']) stub(c);
    await execFileP('/bin/sh', [resolve(repo, 'infra/deb', script), ...args], { env: { PATH: `${bin}:/usr/bin:/bin` } });
    return readFileSync(log, 'utf8').trim().split('\n').filter((l) => !l.startsWith('getent'));
  }

  it('postinst configure makes the lifeboat system user and a 0700 state directory, once', async () => {
    const fresh = await run('postinst', ['configure', ''], []);
    expect(fresh[0]).toMatch(/^adduser --system --group --home \/var\/lib\/lifeboat-agent --no-create-home .*lifeboat$/);
    expect(fresh).toContain('install -d -o lifeboat -g lifeboat -m 0700 /var/lib/lifeboat-agent');
    const again = await run('postinst', ['configure', '0.0.9'], ['lifeboat']);
    expect(again.filter((l) => l.startsWith('adduser'))).toEqual([]);
  });

  it('postrm purge removes the state and the user; remove keeps them', async () => {
    const purge = await run('postrm', ['purge'], ['lifeboat']);
    expect(purge).toEqual(expect.arrayContaining(['rm -rf /var/lib/lifeboat-agent', 'deluser --system --quiet lifeboat']));
    const remove = await run('postrm', ['remove'], ['lifeboat']);
    expect(remove.filter((l) => /^(rm|deluser)/.test(l))).toEqual([]);
  });

  it('reject an unknown action', async () => {
    for (const s of ['postinst', 'prerm', 'postrm']) await expect(run(s, ['frobnicate'], [])).rejects.toThrow(/unknown argument/);
  });
});

describe.skipIf(lintian === undefined)('lintian', () => {
  it('finds no errors in the packaging', async () => {
    const deb = process.env.LIFEBOAT_LINTIAN === 'full' ? await buildDeb('copy', 'gzip') : await buildDeb('none', 'gzip');
    const r = await execFileP(lintian!, ['--tag-display-limit', '0', deb], { maxBuffer: 16 << 20 }).catch((err: { stdout: string; stderr: string; code: number }) => err);
    const tags = r.stdout.split('\n').filter((l) => /^[EWI]: /.test(l));
    const errors = tags.filter((l) => l.startsWith('E: '));
    expect(errors).toEqual([]);
    // Warnings are allowed but named: only those expected of a tree without node_modules.
    expect(tags.filter((l) => !/package-contains-empty-directory/.test(l))).toEqual([]);
  }, 900_000);
});
