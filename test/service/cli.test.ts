/**
 * The commands as an operator runs them: init, serve on the embedded defaults (PGlite catalog, file
 * store), the admin subcommands through the running service's API, and clear one-line errors.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBin, scratchDir } from '../helpers.js';
import type { CommandOutput } from '../helpers.js';
import { refused } from '../cli-expect.js';
import { freePort } from './helpers.js';

const bin = join(import.meta.dirname, '..', '..', 'bin', 'lifeboat-service.js');

function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CommandOutput> {
  return runBin('service', args, { env });
}

let scratch: Awaited<ReturnType<typeof scratchDir>>;
let config: string;
let serve: ChildProcess | undefined;
let ready: string;

beforeAll(async () => {
  scratch = await scratchDir('lifeboat-cli-');
  const init = await run(['init', '--data-dir', join(scratch.path, 'data'), '--public-host', 'localhost']);
  expect(init.code).toBe(0);
  config = join(scratch.path, 'data', 'lifeboat.json');
  expect(init.stdout).toContain(`made configuration: ${config}`);
  expect((await stat(join(scratch.path, 'data', 'keys', 'ca.key'))).mode & 0o777).toBe(0o600);
  const file = JSON.parse(await readFile(config, 'utf8')) as { api: { port: number }; agentEndpoint: { port: number }; logLevel: string };
  file.api.port = await freePort();
  file.agentEndpoint.port = await freePort();
  await writeFile(config, JSON.stringify(file));

  serve = spawn(process.execPath, [bin, 'serve', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  ready = await new Promise<string>((resolve, reject) => {
    let out = '';
    let err = '';
    serve!.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    serve!.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out);
    });
    serve!.on('exit', (code) => reject(new Error(`serve exited ${code}: ${err.slice(-2000)}`)));
  });
});
afterAll(async () => {
  if (serve && serve.exitCode === null) {
    const exited = new Promise((resolve) => serve!.once('exit', resolve));
    serve.kill('SIGTERM');
    await exited;
  }
  await scratch?.remove();
});

describe('lifeboat-service', () => {
  it('init refuses to overwrite a data directory', async () => {
    const again = await run(['init', '--data-dir', join(scratch.path, 'data')]);
    expect(again.code).toBe(1);
    expect(again.stderr.trim().split('\n')).toHaveLength(1);
    expect(again.stderr).toMatch(/already exists/);
  });

  it('init refuses a bad public host and object store in one line, making nothing', async () => {
    const dir = join(scratch.path, 'bad-init');
    await refused(run(['init', '--data-dir', dir, '--public-host', 'bad host!']), /^lifeboat-service: --public-host "bad host!" is not a host name or IP address$/m);
    await refused(run(['init', '--data-dir', dir, '--object-store', 'bogus://x']), /^lifeboat-service: object store URL scheme bogus: is not supported/);
    await expect(stat(dir)).rejects.toThrow(/ENOENT/);
  });

  it('a directory given as --config is named with the file it should be', async () => {
    await refused(run(['serve', '--config', join(scratch.path, 'data')]), /^lifeboat-service: \S+\/data: is a directory; --config names the configuration file \(\S+\/data\/lifeboat\.json/);
  });

  it('serve prints one ready line with its URLs', () => {
    expect(ready).toMatch(/^lifeboat-service ready: api http:\/\/127\.0\.0\.1:\d+ agents https:\/\/127\.0\.0\.1:\d+\n$/);
  });

  it('admin subcommands work through the running service', async () => {
    expect((await run(['tenant', 'create', 'acme', '--config', config])).stdout).toBe('created tenant acme\n');
    const bad = await run(['tenant', 'allow', 'acme', '--server', '*.*.acme.com', '--config', config]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^lifeboat-service: server pattern "\*\.\*\.acme\.com" has 2 '\*'; at most one is allowed/);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    // Replica storage must exist (a missing one is storage gone or unmounted) and be named absolutely.
    for (const [storage, why] of [['replicas', /--storage "replicas" must be an absolute path/], [join(scratch.path, 'unmounted'), /--storage .*unmounted does not exist/]] as const) {
      const r = await run(['tenant', 'allow', 'acme', '--server', '*.acme.com', '--storage', storage, '--config', config]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(why);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    const ok = await run(['tenant', 'allow', 'acme', '--server', '*.acme.com', '--config', config]);
    expect(ok.code).toBe(0);
    const list = await run(['tenant', 'list', '--json'], { LIFEBOAT_CONFIG: config });
    expect(JSON.parse(list.stdout)).toMatchObject([{ name: 'acme', authorizations: [{ pattern: '*.acme.com', trustGroup: 'default' }] }]);
    const token = await run(['token', 'create', '--tenant', 'acme', '--ttl', '30m', '--config', config]);
    expect(token.code).toBe(0);
    expect(token.stdout.trim().split('\n').at(-1)).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    expect(JSON.parse((await run(['vm', 'list', '--json', '--config', config])).stdout)).toEqual([]);
    const points = await run(['points', 'nope', '--tenant', 'acme', '--config', config]);
    expect(points.code).toBe(1);
    expect(points.stderr).toBe('lifeboat-service: tenant acme has no VM nope\n');
    // A missing tenant is worded as vm list words it.
    expect((await run(['points', 'nope', '--tenant', 'nosuch', '--config', config])).stderr).toBe('lifeboat-service: no tenant nosuch\n');
    expect((await run(['vm', 'list', '--tenant', 'nosuch', '--config', config])).stderr).toBe('lifeboat-service: no tenant nosuch\n');
    // export takes its format from OUT's name, and says so when the name gives none.
    const byName = await run(['export', join(scratch.path, 'out.vhdx'), '--tenant', 'acme', '--vm', 'nope', '--disk', 'disk0', '--config', config]);
    expect(byName.stderr).toMatch(/^lifeboat-service: .*no VM nope/);
    const noFormat = await run(['export', join(scratch.path, 'out.qcow2'), '--tenant', 'acme', '--vm', 'nope', '--disk', 'disk0', '--config', config]);
    expect(noFormat.stderr).toMatch(/^lifeboat-service: .*out\.qcow2: give --format vhdx or raw/);
    const revoke = await run(['tenant', 'revoke-server', 'acme', 'hv1.acme.com', '--config', config]);
    expect(revoke.stderr).toMatch(/no live certificate/);
  });

  it('api-key create, list and revoke through the running service; the key works until revoked', async () => {
    await run(['tenant', 'create', 'keyed', '--config', config]);
    const apiUrl = /api (http:\/\/\S+)/.exec(ready)![1]!;
    const call = (key: string, path: string) => fetch(`${apiUrl}${path}`, { headers: { authorization: `Bearer ${key}` } });
    const created = await run(['api-key', 'create', '--name', 'ci reader', '--role', 'tenant-viewer', '--tenant', 'keyed', '--config', config]);
    expect(created.code, created.stderr).toBe(0);
    const key = created.stdout.trim().split('\n').at(-1)!;
    expect(key).toMatch(/^lbk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect((await call(key, '/v1/tenants/keyed/failovers')).status).toBe(200);
    expect((await call(key, '/v1/tenants')).status).toBe(403);
    const listed = JSON.parse((await run(['api-key', 'list', '--tenant', 'keyed', '--json', '--config', config])).stdout) as { id: string; lastUsedAt: string | null; key?: string }[];
    expect(listed).toHaveLength(1);
    expect(listed[0]!.key).toBeUndefined();
    expect(listed[0]!.lastUsedAt).not.toBeNull();
    expect(key).toContain(listed[0]!.id);
    const revoked = await run(['api-key', 'revoke', listed[0]!.id, '--json', '--config', config]);
    expect(JSON.parse(revoked.stdout)).toMatchObject({ id: listed[0]!.id, revokedAt: expect.any(String) });
    const after = await call(key, '/v1/tenants/keyed/failovers');
    expect(after.status).toBe(401);
    expect(await after.json()).toMatchObject({ code: 'unauthenticated', reason: 'key_revoked' });
    // A mistake is one line from the API's problem detail, and exit 1.
    const bad = await run(['api-key', 'create', '--name', 'x', '--role', 'tenant-viewer', '--tenant', 'nosuch', '--config', config]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe('lifeboat-service: no tenant nosuch\n');
    expect((await run(['api-key', 'create', '--help'])).stdout).toMatch(/--expires-in <duration>/);
  });

  it('refuses a second serve on the same embedded catalog in one line naming the first', async () => {
    const file = JSON.parse(await readFile(config, 'utf8')) as { api: { port: number }; agentEndpoint: { port: number } };
    file.api.port = await freePort();
    file.agentEndpoint.port = await freePort();
    const second = join(scratch.path, 'data', 'second.json');
    await writeFile(second, JSON.stringify(file));
    const r = await run(['serve', '--config', second]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^lifeboat-service: the embedded catalog in \S+\/data\/catalog is open in another process \(pid \d+\): one serve per data directory/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    // The first goes on serving.
    expect((await run(['vm', 'list', '--json', '--config', config])).code).toBe(0);
  });

  it('says clearly when there is no config, a bad config, or no running service', async () => {
    const none = await run(['vm', 'list'], { LIFEBOAT_CONFIG: '' });
    expect(none.stderr).toMatch(/no configuration: pass --config FILE or set LIFEBOAT_CONFIG/);
    const badFile = join(scratch.path, 'bad.json');
    await writeFile(badFile, JSON.stringify({ version: 1 }));
    const bad = await run(['serve', '--config', badFile]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^lifeboat-service: .*bad\.json: catalog: /);
    const file = JSON.parse(await readFile(config, 'utf8')) as { api: { port: number } };
    file.api.port = await freePort();
    const stopped = join(scratch.path, 'data', 'stopped.json');
    await writeFile(stopped, JSON.stringify(file));
    // Redis unreachable: one line, no ioredis stack trace.
    const noRedis = join(scratch.path, 'data', 'no-redis.json');
    const own = JSON.parse(await readFile(config, 'utf8')) as Record<string, object>;
    await writeFile(noRedis, JSON.stringify({
      ...own, catalog: { kind: 'pglite', dir: join(scratch.path, 'data', 'catalog-no-redis') }, redis: { url: `redis://127.0.0.1:${await freePort()}` },
      api: { ...own.api, port: await freePort() }, agentEndpoint: { ...own.agentEndpoint, port: await freePort() },
    }));
    const serveNoRedis = await run(['serve', '--config', noRedis]);
    expect(serveNoRedis.code).toBe(1);
    expect(serveNoRedis.stderr).toMatch(/^lifeboat-service: Redis at redis:\/\/127\.0\.0\.1:\d+ is not reachable/);
    expect(serveNoRedis.stderr).not.toMatch(/ioredis|\n\s+at /);
    const down = await run(['vm', 'list', '--config', stopped]);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/the service is not running at http:\/\/127\.0\.0\.1:\d+/);
  });
});
