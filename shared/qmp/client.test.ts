/**
 * The QMP client against a real qemu-system-x86_64 (paused, no disks), the guest-agent client
 * against a real qemu-ga listening on a unix socket on this host (package qemu-guest-agent), and
 * the byte splitter both use.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratchDir } from '../../test/helpers.js';
import { isLifeboatError } from '../errors.js';
import { GuestAgentClient, JsonSplitter, QmpClient, QmpError } from './client.js';

async function waitForSocket(path: string, child: ChildProcess, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (child.exitCode !== null) throw new Error(`${child.spawnfile} exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error(`${path} did not appear`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

describe('JsonSplitter', () => {
  it('cuts objects split across chunks, with braces and escapes inside strings', () => {
    const s = new JsonSplitter();
    const text = Buffer.from('{"a":"}{\\"x"}\r\n{"b":[1,{"c":2}]}\r\n');
    const got = [] as unknown[];
    for (let i = 0; i < text.length; i += 3) got.push(...s.feed(text.subarray(i, i + 3)));
    expect(got).toEqual([{ a: '}{"x' }, { b: [1, { c: 2 }] }]);
  });

  it('after resync drops everything up to the 0xFF delimiter, half an object included', () => {
    const s = new JsonSplitter();
    expect(s.feed(Buffer.from('{"stale":'))).toEqual([]);
    s.resync();
    expect(s.feed(Buffer.from('1}{"error":{}}'))).toEqual([]);
    expect(s.feed(Buffer.concat([Buffer.from([0xff]), Buffer.from('{"return":7}\n')]))).toEqual([{ return: 7 }]);
  });
});

describe('QmpClient against qemu', () => {
  let dir: Awaited<ReturnType<typeof scratchDir>>;
  let qemu: ChildProcess;
  let sock: string;

  beforeAll(async () => {
    dir = await scratchDir('lifeboat-qmp-');
    sock = join(dir.path, 'qmp.sock');
    qemu = spawn('qemu-system-x86_64', ['-S', '-nodefaults', '-display', 'none', '-accel', 'tcg', '-m', '32', '-qmp', `unix:${sock},server=on,wait=off`], { stdio: 'ignore' });
    await waitForSocket(sock, qemu);
  });
  afterAll(async () => {
    if (qemu.exitCode === null) qemu.kill('SIGKILL');
    await exited(qemu);
    await dir.remove();
  });

  it('reads the greeting, runs commands with ids, reports qemu errors by command and desc, waits for events', async () => {
    const qmp = await QmpClient.connect(sock);
    expect(qmp.greeting.version.qemu.major).toBeGreaterThanOrEqual(7);

    // Several in flight at once, each answered by its own id.
    const [status, version, name] = await Promise.all([
      qmp.execute<{ status: string; running: boolean }>('query-status'),
      qmp.execute<{ qemu: { major: number } }>('query-version'),
      qmp.execute<Record<string, unknown>>('query-name'),
    ]);
    expect(status).toMatchObject({ status: 'prelaunch', running: false });
    expect(version.qemu.major).toBe(qmp.greeting.version.qemu.major);
    expect(name).toEqual({});

    const unknown = await qmp.execute('no-such-command').catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(QmpError);
    expect((unknown as QmpError).qmpClass).toBe('CommandNotFound');
    expect((unknown as QmpError).message).toMatch(/^qemu no-such-command: .*no-such-command/);

    const bad = await qmp.execute('block-dirty-bitmap-add', { node: 'nothing', name: 'b' }).catch((e: unknown) => e);
    expect(isLifeboatError(bad)).toBe(true);
    expect((bad as Error).message).toMatch(/^qemu block-dirty-bitmap-add: .*nothing/);

    expect(await qmp.hmp('info status')).toMatch(/prelaunch/);

    const resumed = qmp.waitEvent('RESUME');
    await qmp.execute('cont');
    expect((await resumed).event).toBe('RESUME');
    const stopped = qmp.waitEvent('STOP');
    await qmp.execute('stop');
    await stopped;

    await qmp.close();
    expect(qmp.closed).toBe(true);
    await expect(qmp.execute('query-status')).rejects.toThrow(/closed/);
  });

  it('a second connection after close works; quit fails nothing and closes', async () => {
    const qmp = await QmpClient.connect(sock);
    const shutdown = qmp.waitEvent('SHUTDOWN');
    await qmp.execute('quit');
    await shutdown;
    await new Promise<void>((r) => (qmp.closed ? r() : qmp.once('close', () => r())));
    await exited(qemu);
    await expect(QmpClient.connect(sock, { timeoutMs: 1000 })).rejects.toThrow(/qmp .*qmp\.sock: (no such socket|connection refused)/);
  });
});

describe('GuestAgentClient against qemu-ga', () => {
  let dir: Awaited<ReturnType<typeof scratchDir>>;
  let ga: ChildProcess;
  let sock: string;

  beforeAll(async () => {
    dir = await scratchDir('lifeboat-qga-');
    sock = join(dir.path, 'qga.sock');
    ga = spawn('qemu-ga', ['-m', 'unix-listen', '-p', sock, '-f', join(dir.path, 'qga.pid'), '-t', dir.path], { stdio: 'ignore' });
    await waitForSocket(sock, ga);
  });
  afterAll(async () => {
    if (ga.exitCode === null) ga.kill('SIGTERM');
    await exited(ga);
    await dir.remove();
  });

  it('syncs, pings, runs a program with its output and exit code, reads a file, lists interfaces', async () => {
    const agent = await GuestAgentClient.connect(sock);
    try {
      await agent.ping();

      const ok = await agent.exec('/bin/sh', ['-c', 'printf out; printf err >&2; exit 3']);
      expect(ok).toMatchObject({ exitCode: 3 });
      expect(ok.stdout.toString()).toBe('out');
      expect(ok.stderr.toString()).toBe('err');

      const echoed = await agent.exec('/bin/cat', [], { input: Buffer.from('fed through stdin') });
      expect(echoed.stdout.toString()).toBe('fed through stdin');

      const file = join(dir.path, 'marker.bin');
      const content = Buffer.alloc(3 << 20);
      for (let i = 0; i < content.length; i++) content[i] = (i * 7) & 0xff;
      await writeFile(file, content);
      expect((await agent.readFile(file)).equals(await readFile(file))).toBe(true);
      await expect(agent.readFile(file, { maxBytes: 1 << 20 })).rejects.toThrow(/larger than/);

      const missing = await agent.readFile(join(dir.path, 'missing')).catch((e: unknown) => e);
      expect(missing).toBeInstanceOf(QmpError);
      expect((missing as Error).message).toMatch(/^qemu guest-file-open: .*missing/);

      const nics = await agent.networkInterfaces();
      const lo = nics.find((n) => n.name === 'lo');
      expect(lo?.['ip-addresses']?.some((a) => a['ip-address'] === '127.0.0.1')).toBe(true);

      // A resync in the middle of a session (as after a timeout) keeps the session usable.
      await agent.sync();
      await agent.ping();
    } finally {
      agent.close();
    }
  });

  it('a second client after the first closed syncs again', async () => {
    const agent = await GuestAgentClient.connect(sock);
    await agent.ping();
    agent.close();
  });

  it('an agent that never answers fails the connect in time, naming the socket', async () => {
    const { createServer } = await import('node:net');
    const silent = join(dir.path, 'silent.sock');
    const server = createServer(() => undefined).listen(silent);
    try {
      await expect(GuestAgentClient.connect(silent, { timeoutMs: 300 })).rejects.toThrow(/guest agent guest-sync-delimited: no answer within 300 ms/);
    } finally {
      server.close();
    }
  });
});
