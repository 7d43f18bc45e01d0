/**
 * The fuzz harness (docs/fuzzing.md): runs a fast-check property for a time budget, counts its
 * executions, and holds every input to the three promises of a parser that takes outside bytes:
 *
 * - no crash: the target's own check decides (usually: it works, or throws a LifeboatError);
 * - no hang: an async input that takes longer than InputTimeoutMs fails the property (fast-check's
 *   timeout), and a synchronous loop is caught by a watchdog thread that writes the input to
 *   FindingsDir, says so on stderr and kills the process (nothing else can stop a blocked thread);
 * - bounded memory: every Buffer.alloc/allocUnsafe/allocUnsafeSlow is watched, and an input during
 *   which one was larger than the target's limit fails; the watchdog also kills the process, with
 *   the input, when its RSS grows past RssGrowthLimit over the start of the run.
 *
 * Budget: LIFEBOAT_FUZZ_SECONDS per target (default 12, what CI runs in `npm test`), split between
 * the target's properties; LIFEBOAT_FUZZ_RUNS caps the runs of each property; LIFEBOAT_FUZZ_SEED
 * replays a run. Each property prints one line (executions, seconds, slowest input, largest
 * allocation) and appends it as JSON to LIFEBOAT_FUZZ_REPORT when set (`npm run fuzz` prints them).
 */
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { isLifeboatError } from '../../shared/errors.js';

export const FuzzSeconds = positive(process.env.LIFEBOAT_FUZZ_SECONDS, 12);
const FuzzRuns = positive(process.env.LIFEBOAT_FUZZ_RUNS, Number.MAX_SAFE_INTEGER);
const FuzzSeed = process.env.LIFEBOAT_FUZZ_SEED === undefined ? undefined : Number(process.env.LIFEBOAT_FUZZ_SEED);
/** Where the watchdog writes the input of a hang or a memory blow-up. */
export const FindingsDir = process.env.LIFEBOAT_FUZZ_FINDINGS ?? join(tmpdir(), 'lifeboat-fuzz-findings');
/** An async input taking longer than this is a hang (generous: the CI machine is shared and slow). */
export const InputTimeoutMs = 20_000;
/** A synchronous stretch longer than this is a hang (the watchdog's bound; LIFEBOAT_FUZZ_HANG_MS). */
const SyncHangMs = positive(process.env.LIFEBOAT_FUZZ_HANG_MS, 60_000);
/** RSS growth over the start of a property's run after which the watchdog stops the process. */
const RssGrowthLimit = 1536 * 2 ** 20;
/** Heap and buffer memory a property's run may leave behind once collected (pools keep some). */
const RetainedLimit = 256 * 2 ** 20;
/** Largest input the watchdog keeps a copy of (a longer one is cut: its description says so). */
const MaxKeptInput = 16 * 2 ** 20;

function positive(text: string | undefined, fallback: number): number {
  const n = Number(text);
  return text !== undefined && Number.isFinite(n) && n > 0 ? n : fallback;
}

/** The vitest timeout for a test running a target's share of the budget (shrinking and setup included). */
export function testTimeout(share = 1): number {
  return Math.ceil(FuzzSeconds * share * 1000) + 2 * InputTimeoutMs + 60_000;
}

// ---- the watchdog ----

const WatchdogCode = `
const { workerData } = require('node:worker_threads');
const fs = require('node:fs');
const path = require('node:path');
const { shared, syncHangMs, dir } = workerData;
const meta = new Float64Array(shared, 0, 4);
const label = new Uint8Array(shared, 32, 256);
const input = new Uint8Array(shared, 288);
let peak = 0;
setInterval(() => {
  const rss = process.memoryUsage.rss();
  if (rss > peak) { peak = rss; meta[3] = peak; }
  const started = meta[0];
  if (started <= 0) return;
  const what = Date.now() - started > syncHangMs ? 'hang' : meta[2] > 0 && rss > meta[2] ? 'memory' : undefined;
  if (!what) return;
  const name = Buffer.from(label).toString('utf8').replace(/\\0+$/, '');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name.replace(/[^A-Za-z0-9_.-]+/g, '-') + '-' + what + '-' + process.pid + '.bin');
  fs.writeFileSync(file, input.subarray(0, meta[1]));
  fs.writeSync(2, '\\nfuzz ' + name + ': ' + (what === 'hang' ? 'an input ran for more than ' + syncHangMs + ' ms' : 'RSS ' + rss + ' bytes exceeds ' + meta[2]) + '; the input is in ' + file + '\\n');
  process.kill(process.pid, 'SIGKILL');
}, 200);
`;

const shared = new SharedArrayBuffer(288 + MaxKeptInput);
const meta = new Float64Array(shared, 0, 4);
const labelBytes = new Uint8Array(shared, 32, 256);
const inputBytes = new Uint8Array(shared, 288);
let watchdog: Worker | undefined;

function startWatchdog(): void {
  if (watchdog) return;
  watchdog = new Worker(WatchdogCode, { eval: true, workerData: { shared, syncHangMs: SyncHangMs, dir: FindingsDir } });
  watchdog.unref();
}

function setLabel(label: string): void {
  labelBytes.fill(0);
  labelBytes.set(Buffer.from(label, 'utf8').subarray(0, 255));
}

/** Tells the watchdog an input starts; it keeps a copy to write out if the input never ends. */
function inputStarts(input: Uint8Array | string): void {
  const bytes = typeof input === 'string' ? Buffer.from(input, 'utf8') : input;
  const n = Math.min(bytes.length, MaxKeptInput);
  inputBytes.set(bytes.subarray(0, n));
  meta[1] = n;
  meta[0] = Date.now();
}

function inputEnds(): void {
  meta[0] = 0;
}

// ---- retained memory ----

setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

/** Heap and ArrayBuffer bytes still reachable after a full collection. */
function reachable(): number {
  collectGarbage();
  collectGarbage();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

// ---- allocations ----

const allocators = ['alloc', 'allocUnsafe', 'allocUnsafeSlow'] as const;
/** Above this an allocation is refused outright, so a bad length fails the input instead of the machine. */
const RefusedAllocation = 1 << 30;
let largestAllocation = 0;
let watching = 0;
const originals = new Map<string, (size: number, ...rest: unknown[]) => Buffer>();

/** Starts recording the largest Buffer allocation (nested calls share one recorder). */
function watchAllocations(): void {
  if (watching++ > 0) return;
  for (const name of allocators) {
    const original = Buffer[name] as (size: number, ...rest: unknown[]) => Buffer;
    originals.set(name, original);
    (Buffer as unknown as Record<string, unknown>)[name] = function watched(size: number, ...rest: unknown[]): Buffer {
      if (size > largestAllocation) largestAllocation = size;
      if (size > RefusedAllocation) throw new Error(`fuzz: an allocation of ${size} bytes (refused above ${RefusedAllocation})`);
      return original.call(Buffer, size, ...rest);
    };
  }
}

/** Runs fn without counting its allocations (the harness building an input is not the parser's doing). */
export function untracked<T>(fn: () => T): T {
  const before = largestAllocation;
  try {
    return fn();
  } finally {
    largestAllocation = before;
  }
}

function unwatchAllocations(): void {
  if (--watching > 0) return;
  for (const name of allocators) (Buffer as unknown as Record<string, unknown>)[name] = originals.get(name);
}

// ---- running a property ----

export interface FuzzOptions<Ts extends unknown[]> {
  /** Share of the target's budget this property gets (default all of it). */
  share?: number;
  /** Largest single Buffer allocation any input may cause (bytes). */
  maxAllocation: number;
  /** The input as bytes or text, kept by the watchdog while it runs (default: fast-check's rendering). */
  describe?: (...args: Ts) => Uint8Array | string;
  /** Inputs always tried first (regressions, the seeds unchanged). */
  examples?: Ts[];
}

export interface FuzzResult {
  target: string;
  property: string;
  executions: number;
  seconds: number;
  slowestMs: number;
  largestAllocation: number;
  peakRss: number;
  /** Heap and buffer bytes still reachable after the run, over what was before it. */
  retained: number;
  failed: boolean;
  seed: number;
}

/**
 * Runs predicate on generated inputs for the property's share of the budget and throws fast-check's
 * report (seed, path and the shrunk input) when one fails: throws, exceeds InputTimeoutMs, or
 * allocates more than maxAllocation at once. Returns what ran.
 */
export async function fuzz<Ts extends [unknown, ...unknown[]]>(
  target: string,
  property: string,
  arbitraries: { [K in keyof Ts]: fc.Arbitrary<Ts[K]> },
  predicate: (...args: Ts) => Promise<void>,
  options: FuzzOptions<Ts>,
): Promise<FuzzResult> {
  startWatchdog();
  const label = `${target}/${property}`;
  setLabel(label);
  const seed = FuzzSeed ?? (Date.now() ^ (Math.random() * 2 ** 31)) | 0;
  let executions = 0;
  let slowestMs = 0;
  let largest = 0;
  const reachableAtStart = reachable();
  const rssAtStart = process.memoryUsage.rss();
  meta[2] = rssAtStart + RssGrowthLimit;
  meta[3] = rssAtStart;
  const started = performance.now();
  const run = async (...args: Ts): Promise<void> => {
    executions++;
    inputStarts(options.describe ? options.describe(...args) : fc.stringify(args));
    largestAllocation = 0;
    const t0 = performance.now();
    try {
      await predicate(...args);
    } finally {
      inputEnds();
      slowestMs = Math.max(slowestMs, performance.now() - t0);
    }
    largest = Math.max(largest, largestAllocation);
    if (largestAllocation > options.maxAllocation) {
      throw new Error(`an allocation of ${largestAllocation} bytes, more than the ${options.maxAllocation} this input may cause`);
    }
  };
  const ms = FuzzSeconds * (options.share ?? 1) * 1000;
  watchAllocations();
  let failure: unknown;
  try {
    const details = await fc.check(fc.asyncProperty(...(arbitraries as unknown as [fc.Arbitrary<unknown>]), run as (...a: unknown[]) => Promise<void>), {
      seed,
      numRuns: FuzzRuns,
      examples: (options.examples ?? []) as unknown as [unknown][],
      plugins: [fc.interruptAfterTimeLimit(ms), fc.timeout(InputTimeoutMs)],
    });
    if (details.failed) {
      // The seeds are made afresh each run (fresh GUIDs, keys, times), so the seed alone may not bring
      // the failure back: the failing input's own bytes are kept for the regression test.
      let kept = '';
      if (details.counterexample && options.describe) {
        const input = untracked(() => options.describe!(...(details.counterexample as unknown as Ts)));
        kept = `\nthe failing input is in ${keepFinding(`${target}-${property}-failure`, typeof input === 'string' ? Buffer.from(input, 'utf8') : input)}`;
      }
      failure = new Error(`${await fc.asyncDefaultReportMessage(details)}${kept}`, { cause: details.errorInstance });
    }
  } catch (err) {
    failure = err;
  } finally {
    unwatchAllocations();
    meta[2] = 0;
  }
  const seconds = (performance.now() - started) / 1000;
  const retained = Math.max(0, reachable() - reachableAtStart);
  if (failure === undefined && retained > RetainedLimit) failure = new Error(`${label}: ${retained} bytes still reachable after the run (a leak?)`);
  const result: FuzzResult = {
    target, property, executions, seconds, slowestMs: Math.round(slowestMs),
    largestAllocation: largest, peakRss: meta[3]!, retained, failed: failure !== undefined, seed,
  };
  report(result, rssAtStart);
  if (failure !== undefined) throw failure;
  return result;
}

function report(r: FuzzResult, rssAtStart: number): void {
  const line = `fuzz ${r.target}/${r.property}: ${r.executions} executions in ${r.seconds.toFixed(1)} s, slowest input ${r.slowestMs} ms, `
    + `largest allocation ${mib(r.largestAllocation)}, peak RSS +${mib(Math.max(0, r.peakRss - rssAtStart))}, retained ${mib(r.retained)}${r.failed ? `, FAILED (seed ${r.seed})` : ''}`;
  console.log(line);
  const file = process.env.LIFEBOAT_FUZZ_REPORT;
  if (file) appendFileSync(file, `${JSON.stringify({ ...r, rssGrowth: Math.max(0, r.peakRss - rssAtStart) })}\n`);
}

function mib(n: number): string {
  return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}

/** Rethrows anything but a LifeboatError: the one clean way for a parser to refuse bad input. */
export function expectClean(err: unknown): void {
  if (!isLifeboatError(err)) throw err;
}

/** Keeps an input where a person can pick it up (a regression test is made from it); returns the file. */
export function keepFinding(name: string, bytes: Uint8Array): string {
  mkdirSync(FindingsDir, { recursive: true });
  const file = join(FindingsDir, `${name}-${process.pid}-${Date.now()}.bin`);
  writeFileSync(file, bytes);
  return file;
}
