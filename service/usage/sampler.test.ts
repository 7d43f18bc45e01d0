/** The replica storage sampler: allocated bytes as du counts them, one event per tenant, a zero once when storage is gone. */
import { execFileSync } from 'node:child_process';
import { mkdtemp, open, rm, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../catalog/db.js';
import { openCatalog } from '../catalog/db.js';
import { latestReplicaBytes } from '../catalog/usage.js';
import { sampleReplicaStorage } from './sampler.js';

let db: Db;
let dir: string;
const log = pino({ level: 'silent' });

beforeAll(async () => {
  db = await openCatalog({ kind: 'pglite', dir: 'memory://' });
  dir = await mkdtemp(join(tmpdir(), 'lifeboat-sampler-'));
}, 60_000);
afterAll(async () => {
  await db?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('replica storage sampler', () => {
  it('records each tenant\'s allocated bytes, as du counts them, and a zero once when its disks are gone', async () => {
    await db.query(`INSERT INTO tenants (name, replica_public_jwk, replica_private_wrapped) VALUES ('acme', '{}', 'x')`);
    await db.query(`INSERT INTO authorizations (tenant, pattern, storage, trust_group) VALUES ('acme', '*', $1, 'g')`, [dir]);
    await db.query(`INSERT INTO vms (tenant, name, server_fqdn, authorization_id, trust_group, storage_dir, frequency_seconds, history, app_consistent_every, compression)
      VALUES ('acme', 'web', 'h', 1, 'g', $1, 30, 4, 0, 'none')`, [dir]);
    const replica = join(dir, 'acme', 'web', 'd0');
    await mkdir(join(replica, 'points'), { recursive: true });
    // A 64 MiB sparse base with 1 MiB written, and a small file in a subdirectory.
    const base = await open(join(replica, 'base.raw'), 'w');
    await base.truncate(64 << 20);
    await base.write(Buffer.alloc(1 << 20, 0x5a), 0, 1 << 20, 8 << 20);
    await base.close();
    const point = await open(join(replica, 'points', 'p1'), 'w');
    await point.write(Buffer.alloc(10_000, 1));
    await point.close();
    await db.query(`INSERT INTO disks (tenant, vm, id, virtual_size, source_format, replica_dir) VALUES ('acme', 'web', 'd0', $1, 'raw', $2)`, [64 << 20, replica]);
    const du = Number(execFileSync('du', ['--block-size=1', '-s', replica], { encoding: 'utf8' }).split('\t')[0]);
    const dirs = ['', 'points'].map((d) => Number(execFileSync('stat', ['-c', '%b', join(replica, d)], { encoding: 'utf8' })) * 512).reduce((a, b) => a + b, 0);
    const at = new Date('2026-05-01T00:00:00Z');
    const sampled = await sampleReplicaStorage({ db, log }, at);
    // du counts the directories' own blocks too; the sampler counts files.
    expect(sampled.get('acme')).toBe(du - dirs);
    expect(sampled.get('acme')).toBeGreaterThanOrEqual((1 << 20) + 10_000);
    expect(sampled.get('acme')).toBeLessThan(4 << 20);
    expect(await latestReplicaBytes(db, 'acme')).toEqual(new Map([['acme', { bytes: du - dirs, at }]]));
    await db.query('DELETE FROM vms');
    await sampleReplicaStorage({ db, log }, new Date('2026-05-01T01:00:00Z'));
    expect((await latestReplicaBytes(db, 'acme')).get('acme')?.bytes).toBe(0);
    const count = async () => (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM usage_events WHERE kind = 'replica_bytes'`))[0]!.n;
    const n = await count();
    await sampleReplicaStorage({ db, log }, new Date('2026-05-01T02:00:00Z'));
    expect(await count()).toBe(n);
  });
});
