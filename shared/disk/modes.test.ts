/** Disk images hold tenants' data: every image our writers create is readable by its owner alone. */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { scratchDir } from '../../test/helpers.js';
import { createChildDisk, createDisk } from './index.js';

const dir = await scratchDir('lifeboat-disk-modes-');
afterAll(() => dir.remove());

it('creates raw, VHD, VHDX and differencing images 0600 whatever the umask', async () => {
  const old = process.umask(0o022);
  try {
    for (const format of ['raw', 'vhd', 'vhdx'] as const) {
      const path = join(dir.path, `a.${format}`);
      await (await createDisk(path, format, { virtualSize: 1 << 20, type: 'dynamic' })).close();
      expect((await stat(path)).mode & 0o777, format).toBe(0o600);
    }
    const child = join(dir.path, 'child.vhdx');
    await (await createChildDisk(child, join(dir.path, 'a.vhdx'))).close();
    expect((await stat(child)).mode & 0o777).toBe(0o600);
  } finally {
    process.umask(old);
  }
});
