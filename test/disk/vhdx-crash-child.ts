/**
 * Crash-test writer (run by vhdx-crash.test.ts through tsx, then SIGKILLed at a random instant).
 * usage: vhdx-crash-child.ts IMAGE INTENTS SEED
 * Forever: picks a write, zero or (rarely) grow of whole 4 KiB units, appends its intent line to
 * INTENTS before doing it, and prints the op number when it is done; flushes every few ops, with
 * "F n" before and "FD n" after. The intent file is not fsynced: the test kills this process, not
 * the machine, and the page cache survives a killed process.
 */
import { openSync, writeSync } from 'node:fs';
import { vhdxDriver } from '../../shared/disk/vhdx/driver.js';
import type { DiskImage } from '../../shared/disk/types.js';
import { pattern, rng } from './vhdx-helpers.js';

const Unit = 4096;

async function main(): Promise<void> {
  const [image, intents, seedArg] = process.argv.slice(2);
  const seed = Number(seedArg);
  const open = (p: string): Promise<DiskImage> => vhdxDriver.open(p, { readOnly: true, openParent: open });
  const disk = await vhdxDriver.open(image!, { openParent: open });
  const log = openSync(intents!, 'a');
  const note = (line: string) => writeSync(log, `${line}\n`);
  const r = rng(seed);
  let untilFlush = 1 + Math.floor(r() * 6);
  const buf = Buffer.alloc(2 << 20);
  for (let i = 0; ; i++) {
    const units = disk.virtualSize / Unit;
    const at = Math.floor(r() * units) * Unit;
    const len = Math.min(disk.virtualSize - at, (1 + Math.floor(r() * (r() < 0.3 ? 512 : 16))) * Unit);
    const kind = r();
    if (kind < 0.03 && !disk.parent) {
      const next = disk.virtualSize + (1 + Math.floor(r() * 64)) * Unit;
      note(`G ${i} ${next}`);
      await disk.resize(next);
    } else if (kind < 0.25) {
      note(`Z ${i} ${at} ${len}`);
      await disk.zero(at, len);
    } else {
      const dataSeed = seed * 100_000 + i;
      note(`W ${i} ${at} ${len} ${dataSeed}`);
      await disk.write(at, pattern(buf.subarray(0, len), dataSeed));
    }
    if (--untilFlush === 0) {
      note(`F ${i}`);
      await disk.flush();
      note(`FD ${i}`);
      untilFlush = 1 + Math.floor(r() * 6);
    }
    process.stdout.write(`${i}\n`);
  }
}

void main();
