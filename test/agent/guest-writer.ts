/**
 * The writer a real guest runs during the live sources' proofs (docs/agent.md), and the offline check
 * of a recovery point it wrote into: the root filesystem copied out of the point, its journal replayed
 * (`e2fsck -E journal_only`, as a mount would), `e2fsck -fn` clean, every journal record up to the last
 * present one intact and in order, the renamed file one whole version. Shared by the qemu and libvirt
 * sources' guest tests.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { VmCycleResult } from '../../agent/replicate/engine.js';
import { rootPartitionOffset } from '../guest/guest-files.js';
import { execFileP } from '../helpers.js';

export const WriterDir = '/var/lib/lifeboat-writer';
/** The writer: record i is `record i <pad> <sha256 of "record i <pad>">`, fsynced; every 5th record the state file is rewritten whole (64 lines of one version) and renamed over the old. */
export const Writer = `
d=${WriterDir}; mkdir -p $d; cd $d || exit 1
pad=$(printf '%0150d' 0)
i=0
while :; do
  i=$((i+1))
  body="record $i $pad"
  sum=$(printf '%s' "$body" | sha256sum); sum=\${sum%% *}
  printf '%s %s\\n' "$body" "$sum" >> journal
  sync journal
  if [ $((i % 5)) -eq 0 ]; then
    k=0; : > state.tmp
    while [ $k -lt 64 ]; do k=$((k+1)); printf 'version %s line %s %s\\n' $i $k $pad >> state.tmp; done
    sync state.tmp; mv state.tmp state
  fi
done
`;

/** The shell command that prints the number of the last complete record the guest has written. */
export const LastRecordCommand = `tail -n 1 ${WriterDir}/journal | cut -d' ' -f2`;

export interface PointCheck { records: number; partialTail: boolean; stateVersion: number | undefined; fsck: string }

/** A file of the guest's root filesystem (debugfs dump), or undefined when it has none. */
async function dumpFile(fs: string, path: string): Promise<Buffer | undefined> {
  const out = `${fs}.dump`;
  await execFileP('rm', ['-f', out]);
  await execFileP('debugfs', ['-R', `dump ${path} ${out}`, fs]);
  return readFile(out).catch(() => undefined);
}

/**
 * Copies the root filesystem of the replica as it is now (the cycle's recovery point) into a file of
 * its own (e2fsck re-opens a filesystem after replaying its journal and loses a `?offset=`), then
 * checks it offline; throws with what was wrong.
 */
export async function checkPoint(replica: string, fs: string): Promise<PointCheck> {
  const offset = await rootPartitionOffset(replica);
  await execFileP('dd', [`if=${replica}`, `of=${fs}`, `skip=${offset}`, 'bs=4M', 'iflag=skip_bytes', 'conv=sparse', 'status=none']);
  // Replay the journal as a mount would (exit 0: nothing to do, 1: replayed/fixed what recovery fixes).
  const replayed = (out: string) => (/recovering journal/.test(out) ? 'replayed' : 'clean');
  const replay = await execFileP('e2fsck', ['-E', 'journal_only', '-y', fs]).then((r) => replayed(r.stdout + r.stderr), async (err: { code?: number; stdout?: string; stderr?: string }) => {
    if (err.code === 1) return replayed(`${err.stdout}${err.stderr}`);
    const full = await execFileP('e2fsck', ['-fn', fs]).then((r) => r.stdout, (e: { stdout?: string }) => e.stdout ?? '');
    throw new Error(`e2fsck -E journal_only exited ${err.code}: ${err.stdout}${err.stderr}\ne2fsck -fn then says:\n${full.slice(0, 3000)}`);
  });
  const fsck = await execFileP('e2fsck', ['-fn', fs]).then((r) => r.stdout, (err: { code?: number; stdout?: string }) => {
    throw new Error(`e2fsck -fn exited ${err.code} after the journal (${replay}):\n${(err.stdout ?? '').slice(0, 3000)}`);
  });
  const journal = (await dumpFile(fs, `${WriterDir}/journal`)) ?? Buffer.alloc(0);
  const lines = journal.toString('latin1').split('\n');
  const tail = lines.pop()!; // after the last newline: empty, or a record not wholly written at the instant
  lines.forEach((line, i) => {
    const m = /^(record (\d+) 0{150}) ([0-9a-f]{64})$/.exec(line);
    if (!m) throw new Error(`journal line ${i + 1} is not a whole record: ${JSON.stringify(line.slice(0, 80))}`);
    if (Number(m[2]) !== i + 1) throw new Error(`journal line ${i + 1} holds record ${m[2]}`);
    if (createHash('sha256').update(m[1]!).digest('hex') !== m[3]) throw new Error(`record ${i + 1}: checksum differs`);
  });
  const state = await dumpFile(fs, `${WriterDir}/state`);
  let stateVersion: number | undefined;
  if (state !== undefined) {
    const versions = new Set(state.toString('latin1').split('\n').filter(Boolean).map((l) => /^version (\d+) line \d+ 0{150}$/.exec(l)?.[1] ?? 'torn'));
    const count = state.toString('latin1').split('\n').filter(Boolean).length;
    if (versions.size !== 1 || versions.has('torn') || count !== 64) throw new Error(`the renamed file is a mix: versions ${[...versions].join(',')}, ${count} lines`);
    stateVersion = Number([...versions][0]);
  }
  return { records: lines.length, partialTail: tail.length > 0, stateVersion, fsck: `journal ${replay}; ${fsck.trim().split('\n').at(-1) ?? ''}` };
}

export interface ProofPointsOptions {
  /** Runs one cycle of the VM through the engine. */
  cycle: () => Promise<VmCycleResult>;
  /** Makes the next point application-consistent (true) or crash-consistent (false). */
  consistency: (application: boolean) => Promise<void>;
  /** The number of the last record the guest has written (LastRecordCommand in the guest). */
  lastRecord: () => Promise<number>;
  /** The replica's raw file (the point of the last cycle). */
  replica: string;
  /** A directory for the filesystem copies. */
  scratch: string;
  figures: string[];
}

/**
 * Four points while the writer runs (the first the base, then logs), alternating application- and
 * crash-consistent, each checked with checkPoint: none of the records the guest had fsynced before
 * the point missing, never fewer than the point before; both kinds at least twice.
 */
export async function proofPoints(o: ProofPointsOptions): Promise<void> {
  const seen: Record<string, number> = { application: 0, crash: 0 };
  let lastRecords = 0;
  for (let i = 0; i < 4; i++) {
    await new Promise((r) => setTimeout(r, 5000)); // the writer goes on between points
    const application = i % 2 === 0;
    await o.consistency(application);
    const fsynced = (await o.lastRecord()) - 1; // the record before the last one seen was fsynced before the point
    const t = Date.now();
    const r = await o.cycle();
    const cycleSeconds = (Date.now() - t) / 1000;
    expect(r.outcome, r.error).not.toBe('failed');
    expect(r.stats!.consistency, r.stats!.warnings.join(' | ')).toBe(application ? 'application' : 'crash');
    const copy = join(o.scratch, `point-${i}.ext4`);
    const check = await checkPoint(o.replica, copy).catch((err: Error) => { throw new Error(`point ${i} (${r.stats!.consistency}): ${err.message}`); });
    expect(check.records, `point ${i}: records the guest had fsynced before it`).toBeGreaterThanOrEqual(fsynced);
    expect(check.records).toBeGreaterThanOrEqual(lastRecords);
    lastRecords = check.records;
    seen[r.stats!.consistency]!++;
    o.figures.push(`point ${i} ${r.stats!.consistency}: cycle ${cycleSeconds.toFixed(1)} s, changed ${(r.stats!.changedBytes / 1024).toFixed(0)} KiB, sent ${(r.stats!.sentBytes / 1024).toFixed(0)} KiB${r.baseBytes ? `, base of ${Math.round(r.baseBytes / (1 << 20))} MiB` : ''}; ${check.records} records (${fsynced} fsynced before)${check.partialTail ? ' and a partial one' : ''}, state version ${check.stateVersion ?? '-'}; e2fsck: ${check.fsck}${r.stats!.warnings.length ? `; warnings: ${r.stats!.warnings.join(' | ')}` : ''}`);
    await execFileP('rm', ['-f', copy, `${copy}.dump`]);
  }
  expect(seen.application).toBeGreaterThanOrEqual(2);
  expect(seen.crash).toBeGreaterThanOrEqual(2);
  expect(lastRecords).toBeGreaterThan(0);
}
