import { readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { generateKeyPair, loadPrivateKey } from '../../shared/crypto/index.js';
import { LifeboatError } from '../../shared/errors.js';
import { readLogFile } from '../../shared/log/index.js';
import { drainExtents } from '../../shared/log/testing.js';
import { HexLimit } from './generate.js';

const here = dirname(fileURLToPath(import.meta.url));
const names = (await readdir(here)).filter((f) => f.endsWith('.hrl')).map((f) => f.slice(0, -4)).sort();

describe('change-log test vectors', () => {
  it('has the vectors the format needs', () => {
    expect(names).toEqual(expect.arrayContaining(['tiny', 'empty', 'zero-only', 'zstd', 'lz4', 'none', 'application-consistent']));
  });

  for (const name of names) {
    it(`${name}.hrl decodes to ${name}.json`, async () => {
      const key = await loadPrivateKey(join(here, 'key.jwk'));
      const want = JSON.parse(await readFile(join(here, `${name}.json`), 'utf8')) as { header: unknown; extents: unknown; trailer: unknown };
      const reader = await readLogFile(join(here, `${name}.hrl`), { key });
      expect(reader.header).toEqual(want.header);
      expect(await drainExtents(reader, HexLimit)).toEqual(want.extents);
      expect(reader.trailer).toEqual(want.trailer);
    });
  }

  it('opens no vector with another key', async () => {
    const other = (await generateKeyPair()).privateKey;
    for (const name of names) {
      const err = await readLogFile(join(here, `${name}.hrl`), { key: other }).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(LifeboatError);
    }
  });
});
