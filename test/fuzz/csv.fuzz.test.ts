/**
 * Fuzz target: the NIC settings CSV import (`network import`, POST /v1/tenants/{t}/nic-settings/import;
 * importNicCsv in service/api/networks.ts, csv-parse under it), against a running test service whose
 * tenant has two registered VMs with NICs and two granted DR networks. Inputs are CSV files built from
 * a valid one: columns dropped, repeated, reordered, renamed or added; fields replaced by what breaks
 * address, MAC, MTU and network checks; quoting right and wrong; a BOM, comments, blank lines, many
 * rows; then the text itself cut or a character changed. Each file is imported (dry run or for real)
 * by the function the route calls: it imports, or refuses with its bad rows (each one line, with its
 * line number), or throws a LifeboatError below 500. A share goes through the HTTP route as well: a
 * success or a 4xx with a problem body.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { importNicCsv } from '../../service/api/networks.js';
import { ProblemTypeBase } from '../../service/http/problem.js';
import { isLifeboatError } from '../../shared/errors.js';
import { enrolledAgent, httpsJson, operator, testEnv, testService, type TestEnv } from '../service/helpers.js';
import { fuzz, testTimeout } from './harness.js';
import { mutateText, textMutationArb } from './json-mutate.js';

/** An API refusal: a 4xx RFC 9457 problem (service/http/problem.ts). */
const problemBody = z.object({ type: z.string().startsWith(ProblemTypeBase), title: z.string(), status: z.number().int().min(400).max(499), detail: z.string().min(1), code: z.string() });

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
const Tenant = 'acme';
/** The API takes bodies up to 64 KiB; files are cut to what would fit. */
const MaxCsv = 60 * 1024;

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  const agent = await enrolledAgent(svc, Tenant, '*.acme.test', 'hv01.acme.test');
  for (const [vm, mac] of [['web1', '52:54:00:00:00:01'], ['web2', '52:54:00:00:00:02']] as const) {
    const body = { disks: [{ id: 'disk0', virtualSize: 1 << 20, format: 'raw' }], frequency: '30s', history: 0, appConsistentEvery: 0, compression: 'zstd', nics: [{ mac, model: 'virtio', addresses: ['192.168.10.7/24'] }] };
    const r = await httpsJson(`${svc.agentUrl}/v1/vms/${vm}`, { method: 'PUT', body, caPem: svc.ctx.ca.certPem, identity: agent });
    expect(r.status).toBe(201);
  }
  for (const [name, kind, bridge] of [['dr-prod', 'production', 'br-dr0'], ['dr-test', 'test', 'br-dr1']] as const) {
    expect((await operator(svc, 'POST', '/v1/networks', { name, kind, bridge })).status).toBe(201);
    expect((await operator(svc, 'POST', `/v1/networks/${name}/grants`, { tenant: Tenant })).status).toBe(201);
  }
}, 120_000);
afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

const Columns = ['vm', 'mac', 'kind', 'addresses', 'gateway', 'dns', 'network', 'search', 'mtu', 'model'];
/** Valid rows (columns as above): static IPv4 and IPv6, DHCP, DHCPv6, blank. */
const SeedRows = [
  ['web1', '52:54:00:00:00:01', 'production', '10.20.30.40/24 2001:db8::40/64', '10.20.30.1 2001:db8::1', '10.20.30.2;10.20.30.3', 'dr-prod', 'example.com', '1500', 'virtio'],
  ['web1', '52:54:00:00:00:01', 'test', 'dhcp', '', '', 'dr-test', '', '', ''],
  ['web2', '52-54-00-00-00-02', 'production', 'dhcp6', '', '', 'dr-prod', '', '9000', 'e1000'],
  ['web2', '525400000002', 'test', '', '', '', '', '', '', ''],
  ['web2', '52:54:00:00:00:03', 'production', '10.20.30.41/24', '10.20.30.1', '', 'dr-prod', '', '', 'rtl8139'],
];

/** Values that break the checks behind each column. */
const breaking = fc.constantFrom(
  '', ' ', 'web1', 'WEB1', 'web3', '../web1', 'a'.repeat(300),
  '00:00:00:00:00:00', '01:00:5e:00:00:01', 'ff:ff:ff:ff:ff:ff', '52:54:00:00:00:0g', '52:54:00:00:00', '52:54:00:00:00:01:02', '52:54-00:00:00:01',
  'production', 'test', 'PRODUCTION', 'both',
  'dhcp', 'dhcp6', 'dhcp dhcp6', '10.0.0.1', '10.0.0.1/33', '10.0.0.1/0', '0.0.0.0/0', '255.255.255.255/32', '300.1.1.1/24', '::/0', '::1/128', 'fe80::1/64',
  '2001:db8::1/129', '10.20.30.40/24 10.20.30.40/24', '1.2.3.4/24;;;5.6.7.8/16', `${'10.0.0.1/24 '.repeat(300)}`, '10.20.30.40/24%eth0', '::ffff:10.0.0.1/120',
  '10.20.30.1 10.20.30.2', '2001:db8::1 2001:db8::2', '10.99.0.1', 'not-an-ip', '1.1.1.1;8.8.8.8;9.9.9.9;1.0.0.1;4.4.4.4',
  'dr-prod', 'dr-test', 'nope', 'br-dr0', 'dr-prod&calc.exe', 'dr"prod',
  '0', '67', '68', '1280', '65535', '65536', '999999', '-1', '1e3', '1500.5', '00001500',
  'virtio', 'e1000', 'rtl8139', 'ne2k', 'example.com', '-bad-.com', 'a'.repeat(64) + '.com', 'x..y',
  '#comment', 'a,b', 'a"b', 'a\nb', 'a\r\nb', '"', '\ufeff', '\u0000', '\ud800', 'é',
);

const csvInput = fc.record({
  /** Which columns, in which order (indices into Columns, repeats allowed). */
  columns: fc.oneof(
    { weight: 4, arbitrary: fc.constant([...Columns.keys()]) },
    fc.shuffledSubarray([...Columns.keys()], { minLength: 0 }),
    fc.array(fc.nat({ max: Columns.length - 1 }), { maxLength: 12 }),
  ) as fc.Arbitrary<number[]>,
  headerCase: fc.constantFrom('lower', 'lower', 'upper', 'unknown'),
  rows: fc.array(fc.nat({ max: SeedRows.length - 1 }), { minLength: 0, maxLength: 8 }),
  fields: fc.array(fc.record({ row: fc.nat(), column: fc.nat(), value: fc.oneof(breaking, fc.string({ maxLength: 20 })) }), { maxLength: 4 }),
  quote: fc.constantFrom('minimal', 'minimal', 'all', 'none'),
  extras: fc.record({ bom: fc.boolean(), comment: fc.boolean(), blank: fc.boolean(), crlf: fc.boolean(), repeat: fc.constantFrom(1, 1, 1, 600, 5000), ragged: fc.boolean() }),
  text: textMutationArb,
  dryRun: fc.boolean(),
  http: fc.nat({ max: 9 }),
});
type CsvInput = typeof csvInput extends fc.Arbitrary<infer T> ? T : never;

function cell(v: string, quote: string): string {
  if (quote === 'all') return `"${v.replace(/"/g, '""')}"`;
  if (quote === 'minimal' && /[",\r\n]/.test(v)) return `"${v.replace(/"/g, '""')}"`;
  return v;
}

function buildCsv(i: CsvInput): string {
  const names = i.columns.map((c) => Columns[c]!);
  const header = names.map((n) => (i.headerCase === 'upper' ? n.toUpperCase() : i.headerCase === 'unknown' && n === 'dns' ? 'nameservers' : n));
  const rows = i.rows.map((r) => i.columns.map((c) => SeedRows[r]![c]!));
  for (const f of i.fields) {
    const row = rows[f.row % Math.max(1, rows.length)];
    if (row && row.length > 0) row[f.column % row.length] = f.value;
  }
  if (i.extras.ragged && rows[0]) rows[0].push('extra');
  const nl = i.extras.crlf ? '\r\n' : '\n';
  const lines = [header.map((h) => cell(h, i.quote)).join(',')];
  if (i.extras.comment) lines.push('# NIC settings for the DR site');
  for (let k = 0; k < i.extras.repeat && lines.join(nl).length < MaxCsv; k++) {
    for (const r of rows) lines.push(r.map((v) => cell(v, i.quote)).join(','));
    if (i.extras.blank) lines.push('');
  }
  const text = (i.extras.bom ? '\ufeff' : '') + lines.join(nl) + nl;
  return mutateText(text, i.text).slice(0, MaxCsv);
}

/** A refusal's rows name lines of the file, each message one line. */
function checkRefusal(refused: { line: number; message: string }[]): void {
  for (const r of refused) {
    if (!Number.isInteger(r.line) || r.line < 0) throw new Error(`a refusal names line ${r.line}`);
    if (/[\r\n]/.test(r.message)) throw new Error(`a refusal message spans lines: ${JSON.stringify(r.message.slice(0, 200))}`);
  }
}

describe('NIC settings CSV import under mutation', () => {
  it('imports, or refuses with one line per bad row, or fails with a LifeboatError below 500; never a 500 over HTTP', async () => {
    const outcomes = { imported: 0, refused: 0, error: 0, http: 0 };
    await fuzz<[CsvInput]>('csv', 'nic-import', [csvInput], async (i) => {
      const csv = buildCsv(i);
      if (i.http === 0) {
        outcomes.http++;
        const r = await operator(svc, 'POST', `/v1/tenants/${Tenant}/nic-settings/import`, { csv, dryRun: i.dryRun });
        if (r.status >= 500) throw new Error(`HTTP ${r.status}: ${JSON.stringify(r.body).slice(0, 300)}`);
        if (r.status >= 400 && !problemBody.safeParse(r.body).success) throw new Error(`HTTP ${r.status} without a problem body: ${JSON.stringify(r.body).slice(0, 300)}`);
        return;
      }
      try {
        const result = await importNicCsv(svc.ctx.db, Tenant, csv, i.dryRun);
        if ('refused' in result) {
          outcomes.refused++;
          checkRefusal(result.refused);
        } else {
          outcomes.imported++;
        }
      } catch (err) {
        if (!isLifeboatError(err) || err.status >= 500) throw err;
        if (/[\r\n]/.test(err.message)) throw new Error(`an error message spans lines: ${JSON.stringify(err.message.slice(0, 200))}`);
        outcomes.error++;
      }
    }, { maxAllocation: 8 * 2 ** 20, describe: (i) => buildCsv(i) });
    console.log(`csv outcomes: ${JSON.stringify(outcomes)}`);
    expect(outcomes.imported).toBeGreaterThan(0);
    expect(outcomes.refused).toBeGreaterThan(0);
  }, testTimeout());
});

