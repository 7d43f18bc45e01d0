import { spawn } from 'node:child_process';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratchDir } from '../../test/helpers.js';
import { readJsonFile, writeFileAtomic } from './atomic.js';
import { defaultStateDir, resolveStateDir } from './paths.js';
import type { VmConfig } from './schema.js';
import { AgentState } from './store.js';

let dir: string;
let remove: () => Promise<void>;
beforeAll(async () => ({ path: dir, remove } = await scratchDir('lifeboat-agent-state-')));
afterAll(() => remove());

const config = (name: string): VmConfig => ({
  version: 1, name, disks: [{ id: 'disk0', path: '/dev/null' }], frequencyMs: 300_000, history: 0, appConsistentEveryMs: null,
  preSnapshot: null, postSnapshot: null, compression: 'zstd', initial: { mode: 'network' }, startAt: null,
  bandwidthBytesPerSec: null, paused: false, createdAt: new Date(0).toISOString(),
});

describe('state directory', () => {
  it('defaults per OS and honours the overrides in order', () => {
    const base = { env: {}, home: '/home/u' };
    expect(defaultStateDir({ ...base, platform: 'linux', uid: 0 })).toBe('/var/lib/lifeboat-agent');
    expect(defaultStateDir({ ...base, platform: 'linux', uid: 1000 })).toBe('/home/u/.local/state/lifeboat-agent');
    expect(defaultStateDir({ ...base, platform: 'win32', uid: undefined, env: { ProgramData: 'D:\\PD' } })).toBe('D:\\PD\\lifeboat\\agent');
    const ctx = { ...base, platform: 'linux' as const, uid: 1000, env: { LIFEBOAT_AGENT_STATE: '/srv/agent' } };
    expect(resolveStateDir(undefined, ctx)).toBe('/srv/agent');
    expect(resolveStateDir('/opt/x', ctx)).toBe('/opt/x');
  });

  it('round-trips VM config and progress, and lists protected VMs', async () => {
    const state = new AgentState(join(dir, 'rt'));
    await state.init();
    await state.writeConfig(config('web-1'));
    await state.writeConfig(config('db_2'));
    expect(await state.listVms()).toEqual(['db_2', 'web-1']);
    expect((await state.readConfig('web-1')).name).toBe('web-1');
    const progress = await state.readProgress('web-1');
    expect(progress.registered).toBe(false);
    await state.writeProgress('web-1', { ...progress, registered: true });
    expect((await state.readProgress('web-1')).registered).toBe(true);
    expect((await stat(join(state.vmDir('web-1'), 'config.json'))).mode & 0o777).toBe(0o600);
    await state.removeVm('web-1');
    expect(await state.listVms()).toEqual(['db_2']);
  });

  it('refuses corrupt or invalid state with an error naming the file, and leaves it alone', async () => {
    const state = new AgentState(join(dir, 'bad'));
    await state.writeConfig(config('vm'));
    const path = join(state.vmDir('vm'), 'config.json');
    await writeFile(path, '{"version": 1, "name": ');
    await expect(state.readConfig('vm')).rejects.toThrow(/config\.json: state file is not valid JSON/);
    await writeFile(path, JSON.stringify({ ...config('vm'), frequencyMs: 7 }));
    await expect(state.readConfig('vm')).rejects.toThrow(/config\.json: state file is invalid at frequencyMs/);
    expect(JSON.parse(await readFile(path, 'utf8')).frequencyMs).toBe(7);
  });

  it('rejects VM names that could escape the state directory', () => {
    const state = new AgentState(dir);
    for (const bad of ['../x', 'a/b', '', '.hidden', 'Web', 'a.b', 'x'.repeat(65)]) expect(() => state.vmDir(bad)).toThrow(/VM name/);
  });

  it('says "not enrolled" when the identity is missing', async () => {
    await expect(new AgentState(join(dir, 'none')).readIdentity()).rejects.toThrow(/not enrolled/);
  });
});

describe('atomic writes', () => {
  it('a writer killed at any point leaves the old or the new contents, never a mix', async () => {
    const path = join(dir, 'atomic.bin');
    const size = 1 << 20;
    await writeFileAtomic(path, Buffer.alloc(size, 'a'));
    const fixture = fileURLToPath(new URL('./atomic-writer.fixture.ts', import.meta.url));
    for (let round = 0; round < 3; round++) {
      const child = spawn(process.execPath, ['--import', 'tsx', fixture, path, String(size)], { stdio: ['ignore', 'pipe', 'inherit'] });
      // Kill after a varying number of completed writes, so the kill lands inside a later write.
      await new Promise<void>((resolve) => {
        let lines = 0;
        child.stdout.on('data', (d: Buffer) => {
          lines += d.toString().split('\n').length - 1;
          if (lines >= 3 + round * 5) child.kill('SIGKILL');
        });
        child.on('exit', () => resolve());
      });
      const content = await readFile(path);
      expect(content.length).toBe(size);
      expect(content.every((b) => b === content[0])).toBe(true);
      expect(await readJsonFile(join(dir, 'absent.json'))).toBeUndefined();
    }
    // Leftover temp files of a killed writer are recognisable by their prefix.
    expect((await readdir(dir)).filter((n) => n !== 'atomic.bin' && !n.startsWith('.tmp-') && !['rt', 'bad', 'none'].includes(n))).toEqual([]);
  });
});
