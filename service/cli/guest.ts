/**
 * `lifeboat-service guest build [OUT] [--firmware bios|uefi] [--format vhdx|raw] [--size MIB]
 * [--no-cloud-init] [--cache] [--json]`: a small bootable Debian guest disk for tests and drills
 * (docs/guest.md). Progress goes to stderr; the result (path, NVRAM file) to stdout. With --cache the
 * image comes from the guest cache (built there first when missing) and is copied to OUT, or its
 * cached path is printed when OUT is left out.
 */
import { existsSync } from 'node:fs';
import { copyFile, stat, unlink } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { printJson } from '../../shared/cli/run.js';
import { ErrInvalidArgument, LifeboatError } from '../../shared/errors.js';
import { buildGuest, nvramPathFor } from '../guest/build.js';
import { cachedGuest } from '../guest/cache.js';
import type { GuestFirmware, GuestFormat } from '../guest/recipe.js';
import { normalizeGuestOptions } from '../guest/recipe.js';

interface BuildOpts { firmware: string; format?: string; size?: string; cloudInit: boolean; cache?: boolean; json?: boolean }

export function registerGuest(program: Command): void {
  const guest = program.command('guest').description('test guest images');
  guest.command('build [out]')
    .description('build a small bootable Debian 12 guest disk (partitioned, booting through its own bootloader); needs root')
    .option('--firmware <firmware>', 'bios (MBR, extlinux) or uefi (GPT, EFI system partition, OUT.nvram.fd)', 'bios')
    .option('--format <format>', 'vhdx or raw (default: from OUT\'s extension, else vhdx)')
    .option('--size <MiB>', 'virtual disk size in MiB', '2048')
    .option('--no-cloud-init', 'leave cloud-init installed but disabled')
    .option('--cache', 'use the guest cache (LIFEBOAT_GUEST_CACHE, default /var/cache/lifeboat/guests)')
    .option('--json', 'print JSON')
    .action(async (out: string | undefined, opts: BuildOpts) => {
      const format = opts.format ?? (out && /\.(raw|img)$/i.test(out) ? 'raw' : 'vhdx');
      const sizeMiB = Number(opts.size);
      const options = normalizeGuestOptions({ firmware: opts.firmware as GuestFirmware, format: format as GuestFormat, sizeMiB, cloudInit: opts.cloudInit });
      if (!out && !opts.cache) throw ErrInvalidArgument('guest build needs OUT (or --cache to print the cached image\'s path)');
      const target = out ? resolve(out) : undefined;
      for (const p of target ? [target, options.firmware === 'uefi' ? nvramPathFor(target) : undefined] : []) {
        if (p && existsSync(p)) throw new LifeboatError('already_exists', `${p} already exists; the guest build never overwrites`);
      }
      const started = Date.now();
      const onProgress = (step: string, detail?: string) => {
        process.stderr.write(`guest build: ${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s ${step}${detail ? `: ${detail}` : ''}\n`);
      };
      let path: string;
      if (opts.cache) {
        const cached = await cachedGuest({ ...options, onProgress });
        path = target ?? cached;
        if (target) await copyOut(cached, target, options.firmware === 'uefi');
      } else {
        path = (await buildGuest({ ...options, out: target!, onProgress })).path;
      }
      const result = {
        path,
        nvram: options.firmware === 'uefi' ? nvramPathFor(path) : undefined,
        firmware: options.firmware,
        format: options.format,
        cloudInit: options.cloudInit,
        virtualSize: options.sizeMiB * 1024 * 1024,
        fileSize: (await stat(path)).size,
        seconds: Math.round((Date.now() - started) / 100) / 10,
      };
      if (opts.json) return printJson(result);
      process.stdout.write(`${result.path}${result.nvram ? `\n${result.nvram}` : ''}\n`);
    });
}

/** Copies a cached image (and its NVRAM file) to a new OUT; nothing is left there on failure. */
async function copyOut(cached: string, out: string, uefi: boolean): Promise<void> {
  const pairs: [string, string][] = [[cached, out]];
  if (uefi) pairs.push([nvramPathFor(cached), nvramPathFor(out)]);
  const done: string[] = [];
  try {
    for (const [from, to] of pairs) {
      await copyFile(from, to, 1 /* COPYFILE_EXCL */);
      done.push(to);
    }
  } catch (err) {
    for (const p of done) await unlink(p).catch(() => undefined);
    throw err;
  }
}
