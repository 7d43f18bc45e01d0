import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { openObjectStore, redactUrl } from './index.js';

describe('openObjectStore', () => {
  it('picks the adapter by scheme and names it without credentials', async () => {
    const s3 = await openObjectStore('s3://my-bucket/dr/site1?region=eu-west-1&endpoint=http://127.0.0.1:9000&accessKeyId=AKIAEXAMPLE&secretAccessKey=SECRETEXAMPLE');
    expect(s3.location).toBe('s3://my-bucket/dr/site1 at http://127.0.0.1:9000');
    await s3.close();
    const az = await openObjectStore('azure://acct1/lifeboat/dr?accountKey=' + encodeURIComponent(randomBytes(32).toString('base64')));
    expect(az.location).toBe('azure://acct1/lifeboat/dr');
    await az.close();
    const file = await openObjectStore('file:///var/lib/lifeboat/objects');
    expect(file.location).toBe('file:///var/lib/lifeboat/objects');
  });

  it('refuses what it cannot open with one clear error', async () => {
    await expect(openObjectStore('not a url')).rejects.toMatchObject({ code: 'invalid_argument' });
    await expect(openObjectStore('ftp://host/x')).rejects.toMatchObject({ code: 'unsupported' });
    await expect(openObjectStore('s3://Bad_Bucket/x')).rejects.toMatchObject({ code: 'invalid_argument' });
    await expect(openObjectStore('s3://bucket/a%5Cb')).rejects.toMatchObject({ code: 'invalid_argument' });
    await expect(openObjectStore('azure://acct1/Bad_Container')).rejects.toMatchObject({ code: 'invalid_argument' });
    await expect(openObjectStore('azure://acct1/container', { env: {} })).rejects.toMatchObject({ code: 'invalid_argument', message: expect.stringContaining('no credentials') });
  });

  it('redacts query strings and user info from URLs for messages', () => {
    expect(redactUrl('s3://b/p?secretAccessKey=x')).toBe('s3://b/p');
    expect(redactUrl('https://user:pw@host/p#frag')).toBe('https://host/p');
  });
});
