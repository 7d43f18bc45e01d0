import { open } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { wrap } from './errors.js';

describe('wrap', () => {
  it('names a path once when the operation already names it', async () => {
    const err = await open('/nonexistent/lifeboat-disk.vhdx').catch((e: unknown) => e);
    expect(wrap('open /nonexistent/lifeboat-disk.vhdx', err).message).toBe('open /nonexistent/lifeboat-disk.vhdx: no such file or directory');
    expect(wrap('read disk0', err).message).toBe('read disk0: /nonexistent/lifeboat-disk.vhdx: no such file or directory');
  });
});
