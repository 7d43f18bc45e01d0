/**
 * Uploads over a bad link: a fault-injecting wrapper fails a share of requests and cuts uploads and
 * downloads midway; with withRetry over it every object still arrives intact (checked by digest),
 * and a reader watching the store the whole time never sees a partial object. Run against every
 * adapter that can run here: file always, s3rver and Azurite (must run in CI).
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestContext } from 'vitest';
import { readAll } from '../../shared/objectstore/body.js';
import { streamOf } from '../../shared/objectstore/conformance.js';
import { openObjectStore } from '../../shared/objectstore/index.js';
import type { ObjectStore } from '../../shared/objectstore/types.js';
import { RetryBudget, withFaults, withRetry } from '../../shared/objectstore/wrappers/index.js';
import { scratchDir } from '../helpers.js';
import { emulatorsMustRun, startAzurite, startS3rver } from './emulators.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const noSleep = async () => undefined;

/** Sizes around every adapter's thresholds: empty, tiny, one S3 part / Azure block, several. */
const sizes = [0, 1, 70_000, 3 * 1024 * 1024, 9 * 1024 * 1024 + 17];

interface Backend {
  store: ObjectStore;
  stop: () => Promise<void>;
}

interface BackendCase {
  name: string;
  mustRun: boolean;
  start: () => Promise<Backend>;
  /** Why a reader racing a write may see it in progress on this backend (an emulator's shortcut). */
  racingReadersSeeWrites?: string;
}

const backends: BackendCase[] = [
  {
    name: 'file',
    mustRun: true,
    start: async () => {
      const dir = await scratchDir('lifeboat-faults-');
      const store = await openObjectStore(`file://${dir.path}`);
      return { store, stop: dir.remove };
    },
  },
  {
    name: 's3rver',
    mustRun: emulatorsMustRun,
    racingReadersSeeWrites: 's3rver writes a PutObject body in place, so a racing reader sees it grow (S3 itself does not); the results after the uploads are still checked',
    start: async () => {
      const e = await startS3rver();
      return { store: await openObjectStore(e.url, { env: e.env }), stop: e.stop };
    },
  },
  {
    name: 'Azurite',
    mustRun: emulatorsMustRun,
    start: async () => {
      const e = await startAzurite();
      return { store: await openObjectStore(e.url, { env: e.env }), stop: e.stop };
    },
  },
  ...(['LIFEBOAT_TEST_S3_URL', 'LIFEBOAT_TEST_AZURE_URL'] as const).map((variable) => ({
    name: `real (${variable})`,
    mustRun: false,
    start: async () => {
      const url = process.env[variable];
      if (!url) throw new Error(`${variable} is not set`);
      const store = await openObjectStore(url);
      // Leave the bucket as found: remove this run's keys.
      const stop = async () => {
        for (const prefix of ['flaky/', 'cut/']) for await (const e of store.list(prefix)) await store.delete(e.key);
      };
      return { store, stop };
    },
  })),
];

for (const backend of backends) {
  describe(`uploads over a faulty link: ${backend.name}`, () => {
    let b: Backend | undefined;
    let why = '';

    beforeAll(async () => {
      try {
        b = await backend.start();
      } catch (err) {
        why = `cannot start: ${(err as Error).message}`;
        if (backend.mustRun) throw err;
        console.warn(`skipping fault tests on ${backend.name}: ${why}`);
      }
    });
    afterAll(async () => {
      await b?.stop();
      await b?.store.close();
    });

    function use(ctx: TestContext): ObjectStore {
      if (b !== undefined) return b.store;
      if (backend.mustRun) throw new Error(`${backend.name} must run: ${why}`);
      return ctx.skip(why);
    }

    it('completes every upload intact, and no reader ever sees a partial object', async (ctx) => {
      const raw = use(ctx);
      const faulty = withFaults(raw, { seed: 20261125, failRate: 0.2, cutRate: 0.5, operations: ['put', 'get'] });
      const reliable = withRetry(faulty, { sleep: noSleep, attempts: 40, budget: new RetryBudget(1000) });
      const objects = new Map(sizes.map((n, i) => [`flaky/obj-${i}`, randomBytes(n)]));

      // A reader with a clean link lists and reads the store over and over while uploads run.
      const watcher = withRetry(raw, { sleep: noSleep });
      let uploading = backend.racingReadersSeeWrites === undefined;
      let observed = 0;
      if (!uploading) await ctx.annotate(`no racing reader: ${backend.racingReadersSeeWrites}`);
      const watching = (async () => {
        while (uploading) {
          for await (const entry of watcher.list('flaky/')) {
            const expected = objects.get(entry.key);
            expect(expected, `unexpected key ${entry.key}`).toBeDefined();
            expect(entry.size).toBe(expected?.length);
            expect((await watcher.head(entry.key)).size).toBe(expected?.length);
            expect(sha(await readAll(await watcher.get(entry.key)))).toBe(sha(expected ?? Buffer.alloc(0)));
            observed++;
          }
        }
      })();

      let i = 0;
      try {
        for (const [key, data] of objects) {
          // Alternate re-readable Buffers and one-shot streams (which withRetry spools).
          await reliable.put(key, i++ % 2 === 0 ? data : streamOf(data, 100_000));
        }
      } finally {
        uploading = false;
        await watching;
      }

      for (const [key, data] of objects) expect(sha(await readAll(await reliable.get(key))), key).toBe(sha(data));
      const listed = [];
      for await (const e of raw.list('flaky/')) listed.push([e.key, e.size]);
      expect(listed.sort()).toEqual([...objects].map(([k, d]) => [k, d.length]).sort());
      if (backend.racingReadersSeeWrites === undefined) expect(observed).toBeGreaterThan(0);
      expect(faulty.stats.failed).toBeGreaterThan(0);
      expect(faulty.stats.cutUploads).toBeGreaterThan(0);
      expect(faulty.stats.cutDownloads).toBeGreaterThan(0);
    });

    it('a cut upload without retries leaves no object, and an overwrite cut midway keeps the old one', async (ctx) => {
      const raw = use(ctx);
      const cutting = withFaults(raw, { seed: 9, cutRate: 1, operations: ['put'] });
      const big = randomBytes(9 * 1024 * 1024);
      await expect(cutting.put('cut/new', big)).rejects.toMatchObject({ code: 'unavailable' });
      await expect(cutting.put('cut/new-stream', streamOf(big))).rejects.toMatchObject({ code: 'unavailable' });
      await expect(raw.head('cut/new')).rejects.toMatchObject({ code: 'not_found' });
      await expect(raw.head('cut/new-stream')).rejects.toMatchObject({ code: 'not_found' });

      await raw.put('cut/old', Buffer.from('old version'));
      await expect(cutting.put('cut/old', big)).rejects.toMatchObject({ code: 'unavailable' });
      expect((await readAll(await raw.get('cut/old'))).toString()).toBe('old version');
      const listed = [];
      for await (const e of raw.list('cut/')) listed.push(e.key);
      expect(listed).toEqual(['cut/old']);
      expect(cutting.stats.cutUploads).toBe(3);
    });
  });
}
