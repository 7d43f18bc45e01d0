/**
 * `npm run demo` with no Redis and no PostgreSQL reachable: run in a fresh network namespace (`unshare
 * -n`, or `unshare -rn` with a user namespace when not root) whose only interface is its own loopback,
 * where nothing listens on 127.0.0.1:6379 or :5432 (the script checks before it starts the demo). It
 * passes on the embedded defaults alone: the PGlite catalog and the private redis-server that serve
 * runs. Skipped, saying why, only where this machine allows no new network namespace or lacks `ip`.
 */
import { spawn, spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { findExecutable } from '../../service/redis/server.js';

const root = resolve(import.meta.dirname, '..', '..');
const unshare = process.getuid?.() === 0 ? ['-n'] : ['-rn'];
const probe = spawnSync('unshare', [...unshare, 'true'], { encoding: 'utf8' });
const cannot = probe.error ? `unshare: ${probe.error.message}` : probe.status !== 0 ? `unshare ${unshare.join(' ')} is not permitted here: ${probe.stderr.trim()}` : undefined;
const noIp = (await findExecutable('ip')) ? undefined : 'ip (iproute2) is not installed: it brings the namespace\'s loopback up';
const skip = cannot ?? noIp;
if (skip) process.stderr.write(`demo-without-servers: skipped: ${skip}\n`);

const script = `set -e
ip link set lo up
for port in 6379 5432; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "something answers on 127.0.0.1:$port"; exit 90; fi
done
echo "nothing answers on 127.0.0.1:6379 or 127.0.0.1:5432"
exec npm run -s demo`;

describe.skipIf(skip !== undefined)('npm run demo in a network namespace with no servers', () => {
  it('passes on the embedded defaults alone', { timeout: 900_000 }, async () => {
    const { code, out } = await new Promise<{ code: number | null; out: string }>((res, reject) => {
      // REDIS_URL would point serve at a Redis the namespace cannot reach; empty counts as unset.
      const child = spawn('unshare', [...unshare, 'bash', '-c', script], { cwd: root, env: { ...process.env, REDIS_URL: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      child.stdout.on('data', (d: Buffer) => { text += d; });
      child.stderr.on('data', (d: Buffer) => { text += d; });
      child.on('error', reject);
      child.on('close', (c) => res({ code: c, out: text }));
    });
    expect(out).toContain('nothing answers on 127.0.0.1:6379 or 127.0.0.1:5432');
    expect(out, out).toMatch(/queues on its own redis-server at \S+\/redis\/redis\.sock/);
    expect(out, out).toContain('qemu-img compare: the exported recovery point equals the source disk');
    expect(out).toContain('• demo complete');
    expect(code, out).toBe(0);
  });
});
