/** The media manifest checks of import-media (docs/formats/agent-media.md, "Import at the hoster"). */
import { mkdir, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratchDir } from '../../test/helpers.js';
import { mediaBaseDir, readMediaManifest } from './import-media.js';

let scratch: Awaited<ReturnType<typeof scratchDir>>;
const want = { tenant: 'acme', vm: 'web01', disk: 'disk0', generation: 1 };
const good = {
  version: 1, ...want, mode: 'full', chunkCount: 1, virtualSize: 1 << 20, complete: true, future: 'ignored',
  chunks: [{ index: 0, file: '0000000000000000.chunk', size: 10, sha256: 'a'.repeat(64), createdAt: '2026-01-01T00:00:00Z' }],
};

beforeAll(async () => {
  scratch = await scratchDir('lifeboat-media-');
});
afterAll(async () => {
  await scratch?.remove();
});

async function withManifest(name: string, manifest: unknown): Promise<string> {
  const dir = mediaBaseDir(`${scratch.path}/${name}`, 'acme', 'web01', 'disk0', 1);
  await mkdir(dir, { recursive: true });
  await writeFile(`${dir}/manifest.json`, typeof manifest === 'string' ? manifest : JSON.stringify(manifest));
  return dir;
}

describe('readMediaManifest', () => {
  it('lays bases out as lifeboat-media/<tenant>/<vm>/<disk>/<generation 016x>', () => {
    expect(mediaBaseDir('/m', 'acme', 'web01', 'disk0', 26)).toBe('/m/lifeboat-media/acme/web01/disk0/000000000000001a');
  });

  it('accepts a complete manifest and ignores unknown fields', async () => {
    const m = await readMediaManifest(await withManifest('good', good), want);
    expect(m).toMatchObject({ chunkCount: 1, mode: 'full' });
  });

  it.each([
    ['other tenant', { ...good, tenant: 'other' }, /belongs to tenant other, not acme/],
    ['other disk', { ...good, disk: 'disk1' }, /names web01\/disk1 generation 1, but lies in the directory of web01\/disk0/],
    ['incomplete', { ...good, complete: false }, /is incomplete/],
    ['unknown version', { ...good, version: 2 }, /version/],
    ['unknown mode', { ...good, mode: 'sparse' }, /mode/],
    ['chunk too large', { ...good, chunks: [{ ...good.chunks[0], size: 2 ** 31 }] }, /chunks\.0\.size/],
    ['not JSON', '{', /is not JSON/],
  ])('refuses %s with one line', async (name, manifest, message) => {
    const dir = await withManifest(name.replace(/ /g, '-'), manifest);
    const err = await readMediaManifest(dir, want).then(() => undefined, (e: unknown) => e as Error);
    expect(err?.message).toMatch(message);
    expect(err?.message).not.toContain('\n');
  });

  it('says when there is no manifest', async () => {
    await expect(readMediaManifest(`${scratch.path}/nothing`, want)).rejects.toThrow(/no media manifest/);
  });
});
