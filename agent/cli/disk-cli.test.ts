/** The disk subcommands as a user runs them: bin/lifeboat-agent.js spawned, exit codes and output checked. */
import { existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { readFile, readdir, rename, truncate, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBin, referee, scratchDir } from '../../test/helpers.js';
import type { CommandOutput } from '../../test/helpers.js';

let dir: Awaited<ReturnType<typeof scratchDir>>;
beforeAll(async () => { dir = await scratchDir('lifeboat-cli-'); });
afterAll(async () => { await dir.remove(); });

function agent(...args: string[]): Promise<CommandOutput> {
  return runBin('agent', args, { cwd: dir.path });
}

/** One line on stderr, no stack trace, a non-zero exit. */
function expectOneLineError(r: { code: number; stderr: string }, pattern: RegExp): void {
  expect(r.code).not.toBe(0);
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^lifeboat-agent: /);
  expect(lines[0]).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

describe('lifeboat-agent disk (raw)', () => {
  it('creates, describes, converts and compares', async () => {
    expect((await agent('disk', 'create', 'a.raw', '--size', '3M')).code).toBe(0);
    await referee('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1048576 5000', join(dir.path, 'a.raw')]);

    const [info, text, conv] = await Promise.all([
      agent('disk', 'info', 'a.raw', '--json'), agent('disk', 'info', 'a.raw'), agent('disk', 'convert', 'a.raw', 'b.raw', '--json'),
    ]);
    expect(info.code).toBe(0);
    expect(JSON.parse(info.stdout)).toMatchObject({ format: 'raw', virtualSize: 3 * 1024 * 1024, blockSize: null, logicalSectorSize: 512, parentChain: [] });
    expect(text.stdout).toMatch(/virtual size:\s+3.00 MiB \(3145728 bytes\)/);
    expect(conv.code).toBe(0);
    expect(JSON.parse(conv.stdout)).toMatchObject({ format: 'raw', virtualSize: 3 * 1024 * 1024 });
    await referee('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', join(dir.path, 'a.raw'), join(dir.path, 'b.raw')]);

    expect(await agent('disk', 'compare', 'a.raw', 'b.raw')).toMatchObject({ code: 0, stdout: 'identical\n' });
    await referee('qemu-io', ['-f', 'raw', '-c', 'write -P 0x01 2000003 1', join(dir.path, 'b.raw')]);
    expect(await agent('disk', 'compare', 'a.raw', 'b.raw')).toMatchObject({ code: 1, stdout: 'differ at offset 2000003\n' });
    const json = await agent('disk', 'compare', 'a.raw', 'b.raw', '--json');
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toEqual({ identical: false, offset: 2000003 });
    expect(JSON.parse((await agent('disk', 'compare', 'a.raw', 'a.raw', '--json')).stdout)).toEqual({ identical: true, offset: null });
  });

  it('gives one line and a non-zero exit for each bad input, leaving no output behind', async () => {
    await writeFile(join(dir.path, 'exists.raw'), 'x');
    const cases: Array<[string[], RegExp]> = [
      [['disk', 'info', 'missing.raw'], /missing.raw: no such file/],
      [['disk', 'create', 'c.raw', '--size', 'lots'], /c.raw: size "lots" is not a size/],
      [['disk', 'create', 'c.raw'], /c.raw: give --size/],
      [['disk', 'create', 'c.raw', '--size', '1M', '--format', 'qcow9'], /unknown format "qcow9"/],
      [['disk', 'create', 'exists.raw', '--size', '1M'], /exists.raw: already exists/],
      [['disk', 'convert', 'missing.raw', 'd.raw'], /missing.raw: no such file/],
      [['disk', 'convert', 'exists.raw', 'exists.raw'], /already exists/],
      [['disk', 'create', 'e.raw', '--parent', 'missing.vhdx'], /missing.vhdx: no such file/],
      // The missing folder is named, not the temporary file that would have been made in it.
      [['disk', 'create', 'nofolder/f.vhdx', '--size', '1M'], /^lifeboat-agent: nofolder\/f\.vhdx: folder nofolder does not exist$/],
    ];
    const results = await Promise.all(cases.map(([args]) => agent(...args)));
    results.forEach((r, i) => expectOneLineError(r, cases[i]![1]));
    for (const f of ['c.raw', 'd.raw', 'e.raw']) expect(existsSync(join(dir.path, f))).toBe(false);
    const cmp = await agent('disk', 'compare', 'missing.raw', 'exists.raw');
    expectOneLineError(cmp, /missing.raw: no such file/);
    expect(cmp.code).toBe(2);
  });

  it('reads an empty file as a raw disk of size 0', async () => {
    await truncate(join(dir.path, 'exists.raw'), 0);
    const r = await agent('disk', 'info', 'exists.raw', '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ format: 'raw', virtualSize: 0 });
  });

  it('converts to VHD and refuses a corrupt VHD in one line, writing nothing', async () => {
    expect((await agent('disk', 'create', 'v.raw', '--size', '5000K')).code).toBe(0);
    await referee('qemu-io', ['-f', 'raw', '-c', 'write -P 0x21 4096 70000', join(dir.path, 'v.raw')]);
    expect((await agent('disk', 'convert', 'v.raw', 'v.vhd', '--format', 'vhd')).code).toBe(0);
    await referee('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', join(dir.path, 'v.raw'), join(dir.path, 'v.vhd')]);
    const info = JSON.parse((await agent('disk', 'info', 'v.vhd', '--json')).stdout);
    expect(info).toMatchObject({ format: 'vhd', subformat: 'dynamic', virtualSize: 5000 * 1024, blockSize: 2 * 1024 * 1024 });

    const bytes = await readFile(join(dir.path, 'v.vhd'));
    bytes[520] = bytes[520]! ^ 0xff; // inside the dynamic header: its checksum no longer matches
    await writeFile(join(dir.path, 'bad.vhd'), bytes);
    await writeFile(join(dir.path, 'short.vhd'), bytes.subarray(0, 1000));
    const cases: Array<[string[], RegExp]> = [
      [['disk', 'info', 'bad.vhd'], /bad.vhd: .*checksum mismatch/],
      [['disk', 'convert', 'bad.vhd', 'out.vhdx'], /bad.vhd/],
      [['disk', 'info', 'short.vhd'], /short.vhd: .*outside the file/],
      [['disk', 'create', 'f.vhd', '--size', '1M', '--type', 'fixed', '--block-size', '2M'], /f.vhd: a fixed VHD has no block size/],
      [['disk', 'create', 'g.vhd', '--size', '3000G', '--format', 'vhd'], /g.vhd: .*exceeds 2040 GiB/],
    ];
    const results = await Promise.all(cases.map(([args]) => agent(...args)));
    results.forEach((r, i) => expectOneLineError(r, cases[i]![1]));
    for (const f of ['out.vhdx', 'f.vhd', 'g.vhd']) expect(existsSync(join(dir.path, f))).toBe(false);
  });

  it('convert killed by SIGTERM or SIGINT leaves no output, not even a partial one', async () => {
    // Enough data that the convert is still running when the signal comes (qemu-io writes it).
    expect((await agent('disk', 'create', 'big.raw', '--size', '256M')).code).toBe(0);
    await referee('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 0 256M', join(dir.path, 'big.raw')]);
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const out = `killed-${signal}.vhdx`;
      const child = spawn(process.execPath, [resolve(import.meta.dirname, '../../bin/lifeboat-agent.js'), 'disk', 'convert', 'big.raw', out], { cwd: dir.path, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
      const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)));
      // Signalled once the image is being written.
      for (let i = 0; i < 3000 && !(await readdir(dir.path)).some((n) => n.startsWith(`.${out}`) || n === out); i++) await new Promise((r) => setTimeout(r, 20));
      child.kill(signal);
      const code = await exited;
      expect(code, stderr).not.toBe(0);
      expect(stderr).toMatch(/interrupted; nothing written/);
      expect((await readdir(dir.path)).filter((n) => n.includes(out))).toEqual([]);
    }
  });

  it('makes and describes a VHDX chain, and refuses it in one line once its parent is gone', async () => {
    expect((await agent('disk', 'create', 'base.vhdx', '--size', '8M', '--block-size', '1M')).code).toBe(0);
    await referee('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x44 0 3M', join(dir.path, 'base.vhdx')]);
    expect((await agent('disk', 'create', 'top.vhdx', '--parent', 'base.vhdx')).code).toBe(0);
    const info = JSON.parse((await agent('disk', 'info', 'top.vhdx', '--json')).stdout);
    expect(info).toMatchObject({ format: 'vhdx', subformat: 'differencing', virtualSize: 8 * 1024 * 1024, blockSize: 1024 * 1024 });
    expect(info.parentChain).toEqual([join(dir.path, 'base.vhdx')]);
    expect((await agent('disk', 'convert', 'top.vhdx', 'top.raw')).code).toBe(0);
    await referee('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', join(dir.path, 'base.vhdx'), join(dir.path, 'top.raw')]);
    expect(await agent('disk', 'compare', 'top.vhdx', 'top.raw')).toMatchObject({ code: 0 });

    await rename(join(dir.path, 'base.vhdx'), join(dir.path, 'moved.vhdx'));
    const [info2, conv] = await Promise.all([agent('disk', 'info', 'top.vhdx'), agent('disk', 'convert', 'top.vhdx', 'lost.raw')]);
    expectOneLineError(info2, /top.vhdx: .*parent not found/);
    expectOneLineError(conv, /top.vhdx: .*parent not found/);
    expect(existsSync(join(dir.path, 'lost.raw'))).toBe(false);
  });
});
