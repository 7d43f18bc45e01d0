/**
 * `npm run build` and what bin/ makes of it (scripts/build.mjs, shared/cli/launch.js): the bundle in
 * dist/ runs both commands, finds the catalog's migrations (serve on embedded defaults applies every
 * one from it) and the guest recipe's sources (the same cache key as the sources give); and the
 * launcher runs the bundle only while every source it was made of is unchanged.
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdir, readFile, readdir, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { cachedGuestPath } from '../../service/guest/cache.js';
import { rootRecipeKey } from '../../service/guest/recipe.js';
import { execFileP, freePort, runBin, scratchDir } from '../helpers.js';
import type { CommandOutput } from '../helpers.js';

const repo = resolve(import.meta.dirname, '..', '..');
/** The bundle or nothing: a missing or stale dist/ fails instead of running the sources. */
const Bundle = { LIFEBOAT_BUNDLE: '1' };

describe('npm run build', () => {
  it('writes a bundle that runs both commands and applies the catalog migrations', async () => {
    // A migration a newer tree's build left in dist/ goes: an older build would apply it, then refuse its own catalog.
    const stale = join(repo, 'dist', 'src', 'service', 'catalog', 'migrations', '999_from_a_newer_tree.sql');
    await mkdir(join(stale, '..'), { recursive: true });
    await writeFile(stale, 'SELECT 1;\n');
    const built = await execFileP('npm', ['run', '-s', 'build'], { cwd: repo });
    await expect(stat(stale)).rejects.toThrow(/ENOENT/);
    expect(built.stderr).toMatch(/^build: dist\/ has lifeboat-agent \(\d+ sources\), lifeboat-service \(\d+ sources\)/);
    const stamp = JSON.parse(await readFile(join(repo, 'dist', 'build.json'), 'utf8')) as { commands: Record<string, Record<string, [number, number]>> };
    expect(Object.keys(stamp.commands['lifeboat-agent']!)).toEqual(expect.arrayContaining(['agent/cli/main.ts', 'agent/cli/status.ts', 'package-lock.json']));
    expect(Object.keys(stamp.commands['lifeboat-service']!)).toEqual(expect.arrayContaining(['service/catalog/migrate.ts', 'service/catalog/migrations/001_initial.sql']));

    const scratch = await scratchDir('lifeboat-build-');
    try {
      const agentHelp = await runBin('agent', ['--help'], { env: Bundle });
      expect(agentHelp).toMatchObject({ code: 0, stderr: '' });
      expect(agentHelp.stdout).toMatch(/^Usage: lifeboat-agent/);
      expect(agentHelp.stdout).toMatch(/\n {2}status +show each protected VM/);
      const status = await runBin('agent', ['status', '--state-dir', join(scratch.path, 'agent')], { env: Bundle });
      expect(status).toMatchObject({ code: 0, stderr: '' });
      expect(status.stdout).toMatch(/^not enrolled: nothing replicates until this agent is \(lifeboat-agent enroll TOKEN; state in .*\)\nno VM is protected\n$/);
      const serviceHelp = await runBin('service', ['--help'], { env: Bundle });
      expect(serviceHelp).toMatchObject({ code: 0, stderr: '' });
      expect(serviceHelp.stdout).toMatch(/\n {2}failover-host +run a failover host alone/);
      // A mistake is still one line from the bundle.
      const bad = await runBin('agent', ['status', '--nope'], { env: Bundle });
      expect(bad).toMatchObject({ code: 1, stdout: '' });
      expect(bad.stderr).toMatch(/^error: unknown option '--nope'\n/);

      // The agent's sealing threads start from dist/seal-worker.js (seal-pool.ts as .js): it loads, with its addons, and answers.
      const worker = new Worker(new URL('../../dist/seal-worker.js', import.meta.url));
      try {
        const reply = new Promise((res, reject) => {
          worker.once('message', res);
          worker.once('error', reject);
        });
        worker.postMessage({ id: 7, close: true });
        expect(await reply).toEqual({ id: 7, ok: true });
      } finally {
        await worker.terminate();
      }

      const data = join(scratch.path, 'data');
      expect((await runBin('service', ['init', '--data-dir', data, '--public-host', 'localhost'], { env: Bundle })).code).toBe(0);
      const config = join(data, 'lifeboat.json');
      const file = JSON.parse(await readFile(config, 'utf8')) as { api: { port: number }; agentEndpoint: { port: number } };
      file.api.port = await freePort();
      file.agentEndpoint.port = await freePort();
      await writeFile(config, JSON.stringify(file));
      await withServe(config, async () => {
        expect((await runBin('service', ['tenant', 'create', 'acme', '--config', config], { env: Bundle })).code).toBe(0);
        const list = await runBin('service', ['tenant', 'list', '--json', '--config', config], { env: Bundle });
        expect(JSON.parse(list.stdout)).toMatchObject([{ name: 'acme' }]);
      });
      const { PGlite } = await import('@electric-sql/pglite');
      const catalog = await PGlite.create(join(data, 'catalog'));
      try {
        const applied = (await catalog.query<{ name: string }>('SELECT name FROM schema_migrations ORDER BY name')).rows.map((r) => r.name);
        const files = (await readdir(join(repo, 'service', 'catalog', 'migrations'))).filter((f) => f.endsWith('.sql')).sort();
        expect(files.length).toBeGreaterThan(0);
        expect(applied).toEqual(files);
      } finally {
        await catalog.close();
      }
    } finally {
      await scratch.remove();
    }
  }, 300_000);

  it('names a cached guest by the same recipe key as the sources', async () => {
    // A cache holding the image the sources name: the bundle must find it instead of building one
    // (an unknown mirror makes a build fail at once if its key differed).
    const scratch = await scratchDir('lifeboat-build-guest-');
    const env = { LIFEBOAT_GUEST_CACHE: scratch.path, LIFEBOAT_GUEST_MIRROR: 'http://127.0.0.1:9/debian' };
    const saved = { cache: process.env.LIFEBOAT_GUEST_CACHE, mirror: process.env.LIFEBOAT_GUEST_MIRROR };
    try {
      Object.assign(process.env, env);
      const image = cachedGuestPath({ firmware: 'bios', format: 'raw' });
      await writeFile(image, 'an image');
      await writeFile(join(scratch.path, `root-${rootRecipeKey()}.tar.zst`), '');
      const r = await runBin('service', ['guest', 'build', '--cache', '--format', 'raw', '--json'], { env: { ...Bundle, ...env } });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ path: image });
    } finally {
      for (const [k, v] of [['LIFEBOAT_GUEST_CACHE', saved.cache], ['LIFEBOAT_GUEST_MIRROR', saved.mirror]] as const) {
        if (v === undefined) delete process.env[k]; else process.env[k] = v;
      }
      await scratch.remove();
    }
  }, 120_000);
});

describe('bin/ with a build', () => {
  /** A tree of its own: the launcher, a command's source and its "bundle", each printing where it runs from. */
  async function tree(): Promise<{ root: string; run(env?: NodeJS.ProcessEnv): Promise<CommandOutput>; remove(): Promise<void> }> {
    const scratch = await scratchDir('lifeboat-launch-');
    const root = scratch.path;
    await mkdir(join(root, 'shared', 'cli'), { recursive: true });
    await mkdir(join(root, 'bin'));
    await mkdir(join(root, 'src'));
    await mkdir(join(root, 'dist'));
    await copyFile(join(repo, 'shared', 'cli', 'launch.js'), join(root, 'shared', 'cli', 'launch.js'));
    await symlink(join(repo, 'node_modules'), join(root, 'node_modules'));
    await writeFile(join(root, 'package.json'), '{ "type": "module" }\n');
    await writeFile(join(root, 'bin', 'cmd.js'), "import { launch } from '../shared/cli/launch.js';\nawait launch('cmd', new URL('../src/main.ts', import.meta.url));\n");
    await writeFile(join(root, 'src', 'main.ts'), "const from: string = 'sources';\nconsole.log(from);\n");
    await writeFile(join(root, 'dist', 'cmd.js'), "console.log('bundle');\n");
    const s = await stat(join(root, 'src', 'main.ts'));
    await writeFile(join(root, 'dist', 'build.json'), JSON.stringify({ version: 1, commands: { cmd: { 'src/main.ts': [Math.trunc(s.mtimeMs / 1000), s.size] } } }));
    const run = async (env: NodeJS.ProcessEnv = {}): Promise<CommandOutput> => {
      try {
        return { code: 0, ...(await execFileP(process.execPath, [join(root, 'bin', 'cmd.js')], { env: { ...process.env, LIFEBOAT_BUNDLE: '', ...env } })) };
      } catch (err) {
        const e = err as CommandOutput;
        return { code: e.code, stdout: e.stdout, stderr: e.stderr };
      }
    };
    return { root, run, remove: scratch.remove };
  }

  it('runs the bundle while its sources are as built, else the sources (quietly when stderr is no terminal)', async () => {
    const t = await tree();
    try {
      expect(await t.run()).toEqual({ code: 0, stdout: 'bundle\n', stderr: '' });
      expect(await t.run({ LIFEBOAT_BUNDLE: '0' })).toEqual({ code: 0, stdout: 'sources\n', stderr: '' });
      // Same size, another second: changed.
      const later = new Date(Date.now() + 5000);
      await utimes(join(t.root, 'src', 'main.ts'), later, later);
      expect(await t.run()).toEqual({ code: 0, stdout: 'sources\n', stderr: '' });
      expect(await t.run({ LIFEBOAT_BUNDLE: '1' })).toEqual({ code: 1, stdout: '', stderr: 'cmd: LIFEBOAT_BUNDLE=1 but src/main.ts changed since the build in dist/\n' });
      await rm(join(t.root, 'src', 'main.ts'));
      expect(await t.run({ LIFEBOAT_BUNDLE: '1' })).toEqual({ code: 1, stdout: '', stderr: 'cmd: LIFEBOAT_BUNDLE=1 but src/main.ts is gone since the build in dist/\n' });
      await rm(join(t.root, 'dist', 'build.json'));
      expect(await t.run({ LIFEBOAT_BUNDLE: '1' })).toEqual({ code: 1, stdout: '', stderr: 'cmd: LIFEBOAT_BUNDLE=1 but there is no build in dist/\n' });
    } finally {
      await t.remove();
    }
  });
});

/** Runs fn while `serve` runs on config (from the bundle), then stops it. */
async function withServe(config: string, fn: () => Promise<void>): Promise<void> {
  const serve = spawn(process.execPath, [join(repo, 'bin', 'lifeboat-service.js'), 'serve', '--config', config], { env: { ...process.env, ...Bundle }, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((res) => serve.once('exit', res));
  try {
    await new Promise<void>((res, reject) => {
      let out = '';
      let err = '';
      serve.stderr.on('data', (d: Buffer) => (err += d.toString()));
      serve.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) res();
      });
      serve.once('exit', (code) => reject(new Error(`serve exited ${code}: ${err.slice(-2000)}`)));
    });
    await fn();
  } finally {
    if (serve.exitCode === null) serve.kill('SIGTERM');
    await exited;
  }
}
