/**
 * The agent's commands on bad input: one clear line on stderr, a non-zero exit, and no state written.
 */
import { execFile } from 'node:child_process';
import { link, mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentState } from '../../agent/state/store.js';
import { scratchDir } from '../helpers.js';

const bin = resolve(import.meta.dirname, '../../bin/lifeboat-agent.js');
let dir: string;
let remove: () => Promise<void>;
beforeAll(async () => ({ path: dir, remove } = await scratchDir('lifeboat-agent-cli-')));
afterAll(() => remove());

async function agent(stateDir: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [bin, ...args], { env: { ...process.env, LIFEBOAT_AGENT_STATE: stateDir } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function expectOneLine(stateDir: string, args: string[], pattern: RegExp): Promise<void> {
  const r = await agent(stateDir, ...args);
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(pattern);
  expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

describe('lifeboat-agent on bad input', () => {
  it('protect refuses missing, unreadable and wrong disks and bad options, writing nothing', async () => {
    const state = join(dir, 'protect');
    const disk = join(dir, 'disk.raw');
    await writeFile(disk, Buffer.alloc(1 << 20));
    await Promise.all([
      expectOneLine(state, ['protect', 'vm1', '--disk', join(dir, 'missing.raw')], /missing\.raw: no such file or directory/),
      expectOneLine(state, ['protect', 'vm1', '--disk', dir], /is a directory/),
      expectOneLine(state, ['protect', 'vm1', '--disk', disk, '--frequency', '7m'], /--frequency "7m" must be 30s, 5m or 15m/),
      expectOneLine(state, ['protect', 'vm1', '--disk', disk, '--history', '25'], /--history "25"/),
      expectOneLine(state, ['protect', 'vm1', '--disk', disk, '--compression', 'gzip'], /--compression "gzip"/),
      expectOneLine(state, ['protect', 'vm1', '--disk', disk, '--initial', 'tape'], /--initial "tape"/),
      expectOneLine(state, ['protect', 'vm1', '--disk', disk, '--initial', `media:${join(dir, 'nope')}`], /nope: no such file or directory/),
      expectOneLine(state, ['protect', 'vm1', '--disk', disk, '--app-consistent-every', '4h'], /needs --pre-snapshot/),
      expectOneLine(state, ['protect', 'vm1', '--disk', disk, '--bandwidth', 'fast'], /--bandwidth "fast"/),
      expectOneLine(state, ['protect', '../vm', '--disk', disk], /VM name "\.\.\/vm"/),
    ]);
    await expect(readdir(state)).rejects.toThrow(/ENOENT/);
  });

  it('protect --bandwidth refuses a bad RATE with one line and records a good one in bytes per second', async () => {
    const state = join(dir, 'bandwidth');
    const disk = join(dir, 'bandwidth.raw');
    await writeFile(disk, Buffer.alloc(1 << 20));
    const rate = /must be a rate such as 20M or 20MB\/s \(bytes per second\) or 100mbit/;
    await Promise.all([
      expectOneLine(state, ['protect', 'vm1', '--disk', disk, '--bandwidth', 'fast'], rate),
      expectOneLine(state, ['protect', 'vm1', '--disk', disk, '--bandwidth', '-1M'], rate),
      expectOneLine(state, ['protect', 'vm1', '--disk', disk, '--bandwidth', '1e9'], rate),
      expectOneLine(state, ['protect', 'vm1', '--disk', disk, '--bandwidth', ''], rate),
      expectOneLine(state, ['protect', 'vm1', '--disk', disk, '--bandwidth', '0'], /--bandwidth "0" is below 1 KiB\/s/),
      expectOneLine(state, ['protect', 'vm1', '--disk', disk, '--bandwidth', '8000bit'], /--bandwidth "8000bit" is below 1 KiB\/s/),
    ]);
    await expect(readdir(state)).rejects.toThrow(/ENOENT/);
    for (const [text, bytes] of [['20M', 20 * 2 ** 20], ['20MB/s', 20 * 2 ** 20], ['100mbit', 12_500_000], ['1gbit/s', 125_000_000], ['64K', 65_536]] as const) {
      const r = await agent(state, 'protect', 'vm1', '--disk', disk, '--bandwidth', text);
      expect(r.code, r.stderr).toBe(0);
      const config = JSON.parse(await readFile(join(state, 'vms', 'vm1', 'config.json'), 'utf8')) as { bandwidthBytesPerSec: number };
      expect(config.bandwidthBytesPerSec, text).toBe(bytes);
    }
  });

  it('protect, pause, resume and status work on a good disk; unknown VMs are one line', async () => {
    const state = join(dir, 'good');
    const disk = join(dir, 'good.raw');
    await writeFile(disk, Buffer.alloc(1 << 20));
    const p = await agent(state, 'protect', 'vm1', '--disk', disk, '--frequency', '30s', '--history', '4');
    expect(p.code).toBe(0);
    expect((await agent(state, 'pause', 'vm1')).code).toBe(0);
    const s = JSON.parse((await agent(state, 'status', '--json')).stdout) as { vms: { name: string; state: string; lastCycle: unknown; pendingBytes: number }[] };
    expect(s.vms).toEqual([expect.objectContaining({ name: 'vm1', state: 'paused', lastCycle: null, pendingBytes: 0 })]);
    expect((await agent(state, 'resume', 'vm1')).code).toBe(0);
    await Promise.all([
      expectOneLine(state, ['pause', 'vm2'], /VM "vm2" is not protected/),
      expectOneLine(state, ['run', '--once'], /this agent is not enrolled/),
    ]);
    // Removing a disk from a protected VM is refused.
    const other = join(dir, 'other.raw');
    await writeFile(other, Buffer.alloc(1 << 20));
    await expectOneLine(state, ['protect', 'vm1', '--disk', other], /already protects .*good\.raw/);
    expect((await agent(state, 'protect', 'vm1', '--disk', disk, '--disk', other)).code).toBe(0);
  });

  it('protect again changes only the settings it names; a disk is protected once, however it is named', async () => {
    const state = join(dir, 'again');
    const disk = join(dir, 'again.raw');
    await writeFile(disk, Buffer.alloc(1 << 20));
    const config = async () => JSON.parse(await readFile(join(state, 'vms', 'vm1', 'config.json'), 'utf8')) as Record<string, unknown>;
    expect((await agent(state, 'protect', 'vm1', '--disk', disk, '--frequency', '30s', '--history', '6', '--compression', 'lz4', '--bandwidth', '20M')).code).toBe(0);
    expect((await agent(state, 'protect', 'vm1', '--disk', disk, '--history', '8')).code).toBe(0);
    expect(await config()).toMatchObject({ frequencyMs: 30_000, history: 8, compression: 'lz4', bandwidthBytesPerSec: 20 << 20 });
    // The same file through a symlink or a hard link is the same disk, in one VM or in two.
    await symlink(disk, join(dir, 'again-link.raw'));
    await link(disk, join(dir, 'again-hard.raw'));
    expect((await agent(state, 'protect', 'vm1', '--disk', join(dir, 'again-link.raw'))).code).toBe(0);
    expect((await config()).disks).toEqual([{ id: 'disk0', path: disk }]);
    await Promise.all([
      expectOneLine(state, ['protect', 'vm1', '--disk', disk, '--disk', join(dir, 'again-hard.raw')], /are the same file|given twice/),
      expectOneLine(state, ['protect', 'vm2', '--disk', join(dir, 'again-link.raw')], /again\.raw is already protected as disk0 of VM vm1/),
    ]);
  });

  it('without enrollment: protect and status say so, run --once on a missing state directory leaves nothing', async () => {
    const state = join(dir, 'unenrolled');
    const disk = join(dir, 'unenrolled.raw');
    await writeFile(disk, Buffer.alloc(1 << 20));
    const p = await agent(state, 'protect', 'vm1', '--disk', disk);
    expect(p.code).toBe(0);
    expect(p.stdout).toMatch(/This agent is not enrolled yet: replication starts once it is \(lifeboat-agent enroll TOKEN\)/);
    expect((await agent(state, 'status')).stdout).toMatch(/^not enrolled: nothing replicates until this agent is \(lifeboat-agent enroll TOKEN/);
    expect(JSON.parse((await agent(state, 'status', '--json')).stdout)).toMatchObject({ enrolled: false });
    const missing = join(dir, 'no-such-state');
    await expectOneLine(missing, ['run', '--once'], /^lifeboat-agent: this agent is not enrolled \(no .*no-such-state\/identity\/agent\.json\); run: lifeboat-agent enroll TOKEN\n$/);
    await expect(readdir(missing)).rejects.toThrow(/ENOENT/);
  });

  it('protect again without --disk keeps the disks and changes the one setting named', async () => {
    const state = join(dir, 'one-setting');
    const disk = join(dir, 'one-setting.raw');
    await writeFile(disk, Buffer.alloc(1 << 20));
    expect((await agent(state, 'protect', 'vm1', '--disk', disk, '--frequency', '30s', '--history', '6', '--compression', 'lz4')).code).toBe(0);
    const again = await agent(state, 'protect', 'vm1', '--bandwidth', '10M');
    expect(again.code, again.stderr).toBe(0);
    const config = JSON.parse(await readFile(join(state, 'vms', 'vm1', 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config).toMatchObject({ disks: [{ id: 'disk0', path: disk }], frequencyMs: 30_000, history: 6, compression: 'lz4', bandwidthBytesPerSec: 10 << 20 });
    await expectOneLine(state, ['protect', 'vm2', '--bandwidth', '10M'], /protect needs --disk PATH/);
  });

  it('status says when the last cycle failed, what failed and what to do', async () => {
    const stateDir = join(dir, 'failing');
    const disk = join(dir, 'failing.raw');
    await writeFile(disk, Buffer.alloc(1 << 20));
    expect((await agent(stateDir, 'protect', 'vm1', '--disk', disk)).code).toBe(0);
    // The record a failed cycle leaves (agent/replicate/engine.ts), as a down service leaves it.
    const store = new AgentState(stateDir);
    const at = '2026-12-01T10:00:05.000Z';
    await store.writeProgress('vm1', {
      ...(await store.readProgress('vm1')), counts: { ok: 3, missed: 0, failed: 2 },
      lastCycle: { startedAt: '2026-12-01T10:00:00.000Z', finishedAt: at, consistency: 'crash', changedBytes: 0, sentBytes: 0, logs: 0, outcome: 'failed', error: 'service https://dr.example:9443 does not answer: connection refused', warnings: [] },
    });
    const text = (await agent(stateDir, 'status')).stdout;
    expect(text).toMatch(/^vm1: \w+ \(last cycle FAILED\), every/m);
    expect(text).toContain(`FAILING:     the cycle at ${at} failed (2 of 5 cycles so far): service https://dr.example:9443 does not answer: connection refused`);
    expect(text).toMatch(/to do: +the service is unreachable/);
    const json = JSON.parse((await agent(stateDir, 'status', '--json')).stdout) as { vms: { counts: unknown; problem: unknown }[] };
    expect(json.vms[0]).toMatchObject({ counts: { ok: 3, missed: 0, failed: 2 }, problem: { at, error: expect.stringMatching(/does not answer/), todo: expect.stringMatching(/unreachable/) } });
  });

  it('reports corrupt state as one line naming the file', async () => {
    const state = join(dir, 'corrupt');
    await mkdir(join(state, 'vms', 'vm1'), { recursive: true });
    await writeFile(join(state, 'vms', 'vm1', 'config.json'), '{"version":');
    await expectOneLine(state, ['status'], /vms\/vm1\/config\.json: state file is not valid JSON/);
  });

  it('run refuses an expired certificate with one line', async () => {
    const state = join(dir, 'expired');
    await mkdir(join(state, 'identity'), { recursive: true });
    for (const f of ['key.pem', 'cert.pem', 'ca.pem', 'tenant-key.jwk']) await writeFile(join(state, 'identity', f), 'x');
    await writeFile(join(state, 'identity', 'agent.json'), JSON.stringify({
      version: 1, serviceUrl: 'https://dr.example.net:9443', name: 'hv01.example.net', tenant: 'acme', caFingerprint: '0'.repeat(64),
      certNotAfter: '2020-01-01T00:00:00.000Z', enrolledAt: '2019-12-01T00:00:00.000Z',
    }));
    await expectOneLine(state, ['run', '--once'], /certificate expired at 2020-01-01T00:00:00\.000Z; enroll again/);
    // An enrolled agent is not enrolled again unless asked: before the token is used, the identity kept.
    const claims = Buffer.from(JSON.stringify({ tenant: 'other', caFingerprint: '1'.repeat(64), exp: 4_000_000_000, endpoint: 'https://127.0.0.1:1' })).toString('base64url');
    const before = await readFile(join(state, 'identity', 'agent.json'), 'utf8');
    await expectOneLine(state, ['enroll', `eyJhbGciOiJFUzI1NiJ9.${claims}.c2ln`], /already enrolled as hv01\.example\.net with tenant acme at https:\/\/dr\.example\.net:9443 .*run enroll again with --force/);
    await expectOneLine(state, ['enroll', '--force', `eyJhbGciOiJFUzI1NiJ9.${claims}.c2ln`], /service https:\/\/127\.0\.0\.1:1 does not answer/);
    expect(await readFile(join(state, 'identity', 'agent.json'), 'utf8')).toBe(before);
  });

  it('enroll refuses bad tokens and services that do not answer', async () => {
    const state = join(dir, 'enroll');
    const claims = Buffer.from(JSON.stringify({ tenant: 't', caFingerprint: '0'.repeat(64), exp: 4_000_000_000 })).toString('base64url');
    const token = `eyJhbGciOiJFUzI1NiJ9.${claims}.c2ln`;
    const withEndpoint = `eyJhbGciOiJFUzI1NiJ9.${Buffer.from(JSON.stringify({ tenant: 't', caFingerprint: '0'.repeat(64), exp: 4_000_000_000, endpoint: 'https://127.0.0.1:1' })).toString('base64url')}.c2ln`;
    const expired = `eyJhbGciOiJFUzI1NiJ9.${Buffer.from(JSON.stringify({ tenant: 't', caFingerprint: '0'.repeat(64), exp: 1000 })).toString('base64url')}.c2ln`;
    await Promise.all([
      expectOneLine(state, ['enroll', '--service', 'https://127.0.0.1:1', '--token', 'garbage'], /enrollment token is not a JWT/),
      expectOneLine(state, ['enroll', '--service', 'https://127.0.0.1:1', '--token', expired], /enrollment token expired/),
      expectOneLine(state, ['enroll', '--service', 'http://127.0.0.1:1', '--token', token], /must be an https:\/\/ URL/),
      expectOneLine(state, ['enroll', '--service', 'https://127.0.0.1:1', '--token', token], /service https:\/\/127\.0\.0\.1:1 does not answer: connection refused/),
      // The token names its endpoint: TOKEN alone is enough (docs/service.md).
      expectOneLine(state, ['enroll', withEndpoint], /service https:\/\/127\.0\.0\.1:1 does not answer: connection refused/),
      expectOneLine(state, ['enroll', token], /the token names no service endpoint; give it with --service URL/),
      expectOneLine(state, ['enroll'], /no enrollment token: run lifeboat-agent enroll TOKEN/),
    ]);
    await expect(readdir(state)).rejects.toThrow(/ENOENT/);
  });

  it('every agent command has --help', async () => {
    const cmds = ['enroll', 'protect', 'unprotect', 'pause', 'resume', 'status', 'run'];
    const results = await Promise.all(cmds.map((cmd) => agent(join(dir, 'help'), cmd, '--help')));
    results.forEach((r, i) => {
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`Usage: lifeboat-agent ${cmds[i]}`));
    });
  });
});
