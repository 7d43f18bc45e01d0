/**
 * lifeboat-agent log inspect FILE --key KEYFILE [--json]: opens a sealed change log, verifies all of it
 * (envelope frames, log rules, trailer counts and digest), then prints its header and extents. Nothing is
 * printed unless the whole log verified; any failure is one line naming the file and exit 1.
 */
import type { Command } from 'commander';
import { loadPrivateKey, type PrivateJwk } from '../../shared/crypto/index.js';
import { readLogFile, type LogHeader, type LogTrailer } from '../../shared/log/index.js';
import { formatBytes } from '../../shared/units.js';
import { about } from './disk-common.js';

export function registerLogInspect(log: Command): void {
  log
    .command('inspect')
    .description('verify a sealed change log and print its header and extents')
    .argument('<file>', 'the sealed log (.hrl)')
    .requiredOption('--key <keyfile>', "the recipient's private key (JWK file)")
    .option('--json', 'print header, trailer and extents as JSON')
    .action(async (file: string, opts: { key: string; json?: boolean }) => {
      const key = await loadPrivateKey(opts.key);
      // First pass: verify everything, so a damaged log prints nothing but its error.
      const trailer = await about(file, async () => {
        const reader = await readLogFile(file, { key });
        for await (const _ of reader.items()) { /* verified as read */ }
        return reader.trailer!;
      });
      await about(file, () => (opts.json ? printJsonReport(file, key, trailer) : printText(file, key, trailer)));
    });
}

/** JSON with the extents streamed one per line, so a log with millions of extents needs no array of them. */
async function printJsonReport(file: string, key: PrivateJwk, trailer: LogTrailer): Promise<void> {
  const reader = await readLogFile(file, { key });
  const head = JSON.stringify({ file, header: { ...reader.header, created: new Date(reader.header.createdMs).toISOString() }, trailer, verified: true }, null, 2);
  process.stdout.write(`${head.slice(0, -2)},\n  "extents": [`);
  let first = true;
  for await (const e of reader.extents()) {
    process.stdout.write(`${first ? '' : ','}\n    ${JSON.stringify({ offset: e.offset, length: e.length, kind: e.kind })}`);
    first = false;
  }
  process.stdout.write(`${first ? '' : '\n  '}]\n}\n`);
}

async function printText(file: string, key: PrivateJwk, trailer: LogTrailer): Promise<void> {
  const reader = await readLogFile(file, { key });
  process.stdout.write(describe(file, reader.header, trailer));
  process.stdout.write(`\n${'offset'.padEnd(16)}${'length'.padEnd(14)}kind\n`);
  for await (const e of reader.extents()) process.stdout.write(`${String(e.offset).padEnd(16)}${String(e.length).padEnd(14)}${e.kind}\n`);
}

function describe(file: string, h: LogHeader, t: LogTrailer): string {
  const lines = [
    ['file', file],
    ['tenant', h.tenant],
    ['vm', h.vm],
    ['disk', h.disk],
    ['generation', String(h.generation)],
    ['sequence', String(h.sequence)],
    ['kind', h.kind],
    ['consistency', h.consistency],
    ['virtual size', `${formatBytes(h.virtualSize)} (${h.virtualSize} bytes)`],
    ['created', new Date(h.createdMs).toISOString()],
    ['compression', `${h.compression} (chunks of ${formatBytes(h.chunkSize)})`],
    ['extents', `${t.extentCount} (${formatBytes(t.dataBytes)} data, ${formatBytes(t.zeroBytes)} zeroed)`],
    ['digest', `xxh3-64 ${t.digest}`],
    ['verified', 'yes: every frame, every extent, trailer counts and digest'],
  ];
  return lines.map(([k, v]) => `${`${k}:`.padEnd(14)}${v}\n`).join('');
}
