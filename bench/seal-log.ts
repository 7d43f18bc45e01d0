/**
 * Seals a log for the merge bench in its own process, so the sealing's garbage is not collected
 * inside the timed merge: `tsx bench/seal-log.ts SPEC_JSON` with
 * { out, source, bytes, recipient, header } (the log rewrites [0, bytes) from the source file).
 */
import { open } from 'node:fs/promises';
import { writeLogFile } from '../shared/log/index.js';

const spec = JSON.parse(process.argv[2]!) as { out: string; source: string; bytes: number; recipient: Parameters<typeof writeLogFile>[3]['recipient']; header: Parameters<typeof writeLogFile>[1] };
const src = await open(spec.source, 'r');
try {
  await writeLogFile(spec.out, spec.header, { extents: [{ offset: 0, length: spec.bytes, kind: 'data' }], read: async (o, b) => { await src.read(b, 0, b.length, o); } }, { recipient: spec.recipient });
} finally {
  await src.close();
}
