/** lifeboat-agent log inspect as a user runs it: bin/lifeboat-agent.js spawned on the test vectors. */
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair, saveJwk } from '../../shared/crypto/index.js';
import { runBin, scratchDir } from '../../test/helpers.js';
import type { CommandOutput } from '../../test/helpers.js';

const vectors = resolve(import.meta.dirname, '../../test/vectors');
const key = join(vectors, 'key.jwk');
let dir: Awaited<ReturnType<typeof scratchDir>>;
beforeAll(async () => { dir = await scratchDir('lifeboat-log-cli-'); });
afterAll(async () => { await dir.remove(); });

function agent(...args: string[]): Promise<CommandOutput> {
  return runBin('agent', args, { cwd: dir.path });
}

/** One line on stderr naming the file, nothing on stdout, no stack trace, a non-zero exit. */
function expectFailure(r: { code: number; stdout: string; stderr: string }, line: RegExp): void {
  expect(r.code).not.toBe(0);
  expect(r.stdout).toBe('');
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(line);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

describe('lifeboat-agent log inspect', () => {
  it('prints the header and extents of a verified log', async () => {
    const r = await agent('log', 'inspect', join(vectors, 'zstd.hrl'), '--key', key);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^tenant:\s+tenant-1$/m);
    expect(r.stdout).toMatch(/^sequence:\s+3$/m);
    expect(r.stdout).toMatch(/^compression:\s+zstd \(chunks of 64.0 KiB\)$/m);
    expect(r.stdout).toMatch(/^verified:\s+yes/m);
    expect(r.stdout).toMatch(/^265536\s+8192\s+zero$/m);
  });

  it('prints JSON matching the vector', async () => {
    const r = await agent('log', 'inspect', join(vectors, 'application-consistent.hrl'), '--key', key, '--json');
    expect(r.code).toBe(0);
    const got = JSON.parse(r.stdout) as { header: Record<string, unknown>; extents: unknown[]; trailer: unknown; verified: boolean };
    const want = JSON.parse(await readFile(join(vectors, 'application-consistent.json'), 'utf8')) as { header: Record<string, unknown>; extents: { offset: number; length: number; kind: string }[]; trailer: unknown };
    expect(got.header).toMatchObject({ ...want.header, consistency: 'application', kind: 'delta', created: '2026-11-25T12:00:00.000Z' });
    expect(got.extents).toEqual(want.extents.map(({ offset, length, kind }) => ({ offset, length, kind })));
    expect(got.trailer).toEqual(want.trailer);
    expect(got.verified).toBe(true);
  });

  it('fails in one line on tampering, truncation, a wrong key and a file that is not a log', async () => {
    const original = await readFile(join(vectors, 'zstd.hrl'));
    const flipped = Buffer.from(original);
    flipped[original.length - 100]! ^= 1;
    await writeFile(join(dir.path, 'flipped.hrl'), flipped);
    await writeFile(join(dir.path, 'cut.hrl'), original.subarray(0, original.length - 4112));
    const other = join(dir.path, 'other.jwk');
    await saveJwk(other, (await generateKeyPair()).privateKey);
    await copyFile(join(vectors, 'tiny.json'), join(dir.path, 'not-a-log.hrl'));
    const cases: [string[], RegExp][] = [
      [['flipped.hrl', '--key', key], /^lifeboat-agent: flipped.hrl: frame \d+ failed authentication/],
      [['cut.hrl', '--key', key], /^lifeboat-agent: cut.hrl: (truncated|frame \d+ failed)/],
      [[join(vectors, 'tiny.hrl'), '--key', other], /^lifeboat-agent: .*tiny.hrl: cannot unwrap the data key: not sealed to this key/],
      [['not-a-log.hrl', '--key', key], /^lifeboat-agent: not-a-log.hrl: not a sealed lifeboat object/],
      [['missing.hrl', '--key', key], /^lifeboat-agent: missing.hrl: no such file or directory$/],
      [[join(vectors, 'tiny.hrl'), '--key', join(vectors, 'tiny.json')], /^lifeboat-agent: .*tiny.json: not an X25519 or P-256 JWK$/],
      [[join(vectors, 'tiny.hrl'), '--key', vectors], /^lifeboat-agent: .*vectors: is a directory, not a key file/],
    ];
    const results = await Promise.all(cases.map(([args]) => agent('log', 'inspect', ...args)));
    results.forEach((r, i) => expectFailure(r, cases[i]![1]));
  });
});
