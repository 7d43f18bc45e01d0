/**
 * `lifeboat-service network …`, `vm nic …` and `failover plan-ip` through the real binary against a
 * running service (real PostgreSQL catalog): what an operator sees, and that each mistake is one line
 * on stderr with exit 1 and nothing stored.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { referee, runBin } from '../helpers.js';
import { refused } from '../cli-expect.js';
import type { CommandOutput } from '../helpers.js';
import { FailoverScenario } from './failover-harness.js';

let s: FailoverScenario;
let config: string;

beforeAll(async () => {
  s = await FailoverScenario.start();
  const disk = join(s.env.dir, 'web1.vhdx');
  await referee('qemu-img', ['create', '-q', '-f', 'vhdx', disk, '4M']);
  await s.protect('web1', [disk]);
  await s.replicate();
  config = await s.cliConfig();
}, 180_000);

afterAll(async () => {
  await s?.stop();
}, 120_000);

const cli = (...args: string[]): Promise<CommandOutput> => runBin('service', [...args, '--config', config]);


describe('lifeboat-service network, vm nic, failover plan-ip', () => {
  // Each run of the binary loads the TypeScript sources afresh: seconds apiece on a busy machine.
  const slow = 600_000;

  it('creates, grants and lists DR networks', async () => {
    expect((await cli('network', 'create', 'dr-prod', '--bridge', 'br-dr0', '--vlan', '120', '--host', 'fo1')).stdout).toBe('created network dr-prod (production, bridge br-dr0 vlan 120)\n');
    expect((await cli('network', 'create', 'dr-test', '--kind', 'test', '--bridge', 'br-dr1')).stdout).toBe('created network dr-test (test, bridge br-dr1)\n');
    expect((await cli('network', 'create', 'gone', '--kind', 'test', '--bridge', 'br-gone')).code).toBe(0);
    expect((await cli('network', 'delete', 'gone')).stdout).toBe('deleted network gone\n');
    await Promise.all([
      refused(cli('network', 'create', 'dr;reboot', '--bridge', 'br0'), /^lifeboat-service: network name "dr;reboot" may hold only letters, digits/),
      refused(cli('network', 'create', '$(Stop-Computer)', '--bridge', 'br0'), /^lifeboat-service: network name "\$\(Stop-Computer\)" must start with a letter or digit\n$/),
      refused(cli('network', 'create', 'dr-x', '--bridge', 'br0 ; ls'), /^lifeboat-service: bridge must be a Linux bridge name/),
      refused(cli('network', 'create', 'dr-prod', '--bridge', 'br0'), /^lifeboat-service: network dr-prod already exists\n$/),
    ]);
    expect((await cli('network', 'grant', 'dr-prod', '--tenant', 'acme')).stdout).toBe('granted network dr-prod to tenant acme\n');
    await refused(cli('network', 'delete', 'dr-prod'), /^lifeboat-service: network dr-prod is granted to tenant acme: revoke the grants first\n$/);
    expect((await cli('network', 'grant', 'dr-test', '--tenant', 'acme')).code).toBe(0);
    expect((await cli('network', 'list')).stdout).toBe('dr-prod\tproduction\tbridge br-dr0 vlan 120\thosts fo1\ttenants acme\ndr-test\ttest\tbridge br-dr1\thosts all\ttenants acme\n');
    expect(JSON.parse((await cli('network', 'list', '--tenant', 'acme', '--json')).stdout)).toHaveLength(2);
  }, slow);

  it('sets, lists and removes NIC settings, refusing bad input in one line with nothing stored', async () => {
    const set = await cli('vm', 'nic', 'set', 'web1', '--tenant', 'acme', '--mac', '52-54-00-00-00-01', '--ip', '10.20.30.40/24', '--ip', '2001:DB8::40/64',
      '--gateway', '10.20.30.1', '--dns', '10.20.30.2', '--search', 'DR.example', '--network', 'dr-prod', '--model', 'e1000');
    expect(set.stderr).toBe('');
    expect(set.stdout).toBe('52:54:00:00:00:01\te1000\n  production  10.20.30.40/24 2001:db8::40/64  gw 10.20.30.1  dns 10.20.30.2  search dr.example  network dr-prod\n  test        blank (mappings, else DHCP)\n');
    expect((await cli('vm', 'nic', 'set', 'web1', '--tenant', 'acme', '--mac', '52:54:00:00:00:01', '--test', '--dhcp', '--network', 'dr-test')).code).toBe(0);
    const listed = '52:54:00:00:00:01\te1000\n  production  10.20.30.40/24 2001:db8::40/64  gw 10.20.30.1  dns 10.20.30.2  search dr.example  network dr-prod\n  test        dhcp  network dr-test\n';
    expect((await cli('vm', 'nic', 'list', 'web1', '--tenant', 'acme')).stdout).toBe(listed);

    const mac = ['--tenant', 'acme', '--mac', '52:54:00:00:00:02'];
    // Refusals store nothing, so they run side by side.
    await Promise.all([
      refused(cli('vm', 'nic', 'set', 'web1', ...mac, '--ip', '10.20.30.400/24'), /^lifeboat-service: vm web1 nic 52:54:00:00:00:02 production\.addresses\[0\]: 10\.20\.30\.400 is not an IP address\n$/),
      refused(cli('vm', 'nic', 'set', 'web1', ...mac, '--ip', '10.20.30.41/33'), /production\.addresses\[0\]: 10\.20\.30\.41\/33: prefix \/33 is out of range 1\.\.32\n$/),
      refused(cli('vm', 'nic', 'set', 'web1', ...mac, '--ip', '10.20.30.41/24', '--gateway', '10.20.31.1'), /production\.gateway4: 10\.20\.31\.1 is off-link: it is in none of the NIC's IPv4 prefixes \(10\.20\.30\.41\/24\)\n$/),
      refused(cli('vm', 'nic', 'set', 'web1', ...mac, '--ip', '10.20.30.40/24', '--network', 'dr-prod'), /production\.addresses\[0\]: 10\.20\.30\.40 in network dr-prod is already used by nic 52:54:00:00:00:01 production\.addresses\[0\]\n$/),
      refused(cli('vm', 'nic', 'set', 'web1', ...mac, '--dhcp', '--network', "dr-prod'; Remove-Item C:\\ -Recurse; '"), /production\.network: network name .* may hold only letters, digits, '\.', '_' and '-'\n$/),
      refused(cli('vm', 'nic', 'set', 'web1', ...mac, '--dhcp', '--network', 'other-net'), /production\.network: no network other-net is granted to tenant acme\n$/),
      refused(cli('vm', 'nic', 'set', 'web1', '--tenant', 'acme', '--mac', '52:54:00:00:01', '--dhcp'), /^lifeboat-service: --mac: "52:54:00:00:01" is not a MAC address/),
      refused(cli('vm', 'nic', 'set', "we'b1", ...mac, '--dhcp'), /^lifeboat-service: vm "we'b1" is not a valid id/),
      refused(cli('vm', 'nic', 'set', 'web"1', ...mac, '--dhcp'), /^lifeboat-service: vm "web\\"1" is not a valid id/),
      refused(cli('vm', 'nic', 'set', 'web1', ...mac, '--dhcp', '--ip', '10.20.30.41/24'), /^lifeboat-service: give one of --dhcp, --ip or --clear \(got --dhcp and --ip\)\n$/),
      refused(cli('vm', 'nic', 'set', 'web1', ...mac, '--test', '--production', '--dhcp'), /^lifeboat-service: give one of --production, --test or --home \(got --production and --test\)\n$/),
      refused(cli('vm', 'nic', 'set', 'web1', ...mac, '--model', 'ne2000'), /^lifeboat-service: model\b/),
      refused(cli('vm', 'nic', 'set', 'web9', ...mac, '--dhcp'), /^lifeboat-service: tenant acme has no VM web9\n$/),
    ]);
    expect((await cli('vm', 'nic', 'list', 'web1', '--tenant', 'acme')).stdout).toBe(listed);

    expect((await cli('vm', 'nic', 'set', 'web1', ...mac, '--dhcp')).code).toBe(0);
    expect((await cli('vm', 'nic', 'remove', 'web1', ...mac)).stdout).toBe('removed NIC 52:54:00:00:00:02 of web1\n');
    await refused(cli('vm', 'nic', 'remove', 'web1', ...mac), /^lifeboat-service: VM web1 has no NIC 52:54:00:00:00:02\n$/);
    // vm's other subcommand is still there.
    expect(JSON.parse((await cli('vm', 'list', '--json')).stdout)).toMatchObject([{ tenant: 'acme', name: 'web1' }]);
  }, slow);

  it('maps, plans and refuses revoking a network in use', async () => {
    expect((await cli('network', 'mapping', 'add', '--tenant', 'acme', '--kind', 'test', '--source', '192.168.10.0/24', '--target', '10.50.10.0/24',
      '--gateway', '10.50.10.1', '--dns', '10.50.0.53', '--network', 'dr-test')).stdout).toBe('tenant acme has 1 mapping(s)\n');
    await refused(cli('network', 'mapping', 'add', '--tenant', 'acme', '--kind', 'test', '--source', '192.168.20.0/24', '--target', '10.50.10.0/16'),
      /^lifeboat-service: mappings\[1\]\.source: 192\.168\.20\.0\/24 is not a network address|^lifeboat-service: mappings\[1\]\.target: /);
    expect((await cli('network', 'mapping', 'list', '--tenant', 'acme')).stdout).toBe('test\t192.168.10.0/24 → 10.50.10.0/24\tgw 10.50.10.1  dns 10.50.0.53  network dr-test\n');

    expect((await cli('vm', 'nic', 'set', 'web1', '--tenant', 'acme', '--mac', '52:54:00:00:00:01', '--test', '--clear', '--reported-ip', '192.168.10.7/24')).code).toBe(0);
    const plan = await cli('failover', 'plan-ip', 'web1', '--tenant', 'acme', '--test');
    expect(plan.stderr).toBe('');
    const via = 'mapping 192.168.10.0/24→10.50.10.0/24';
    expect(plan.stdout).toBe([
      'nic 52:54:00:00:00:01 (dr0): static',
      `  mode          ${'static'.padEnd(28)}${via}`,
      `  addresses[0]  ${'10.50.10.7/24'.padEnd(28)}${via}`,
      `  gateway4      ${'10.50.10.1'.padEnd(28)}${via}`,
      `  dns[0]        ${'10.50.0.53'.padEnd(28)}${via}`,
      `  network       ${'dr-test'.padEnd(28)}${via}`,
      '',
    ].join('\n'));
    const production = JSON.parse((await cli('failover', 'plan-ip', 'web1', '--tenant', 'acme', '--json')).stdout) as { kind: string; nics: { values: { field: string; from: string }[] }[] };
    expect(production.kind).toBe('production');
    expect(production.nics[0]!.values.map((v) => `${v.field}:${v.from}`)).toEqual(['mode:explicit', 'addresses[0]:explicit', 'addresses[1]:explicit', 'gateway4:explicit', 'dns[0]:explicit', 'search[0]:explicit', 'network:explicit']);

    await refused(cli('network', 'revoke', 'dr-test', '--tenant', 'acme'), /^lifeboat-service: network dr-test is still used by tenant acme: test mapping of 192\.168\.10\.0\/24\n$/);
    expect((await cli('network', 'mapping', 'remove', '--tenant', 'acme', '--all')).stdout).toBe('tenant acme has 0 mapping(s) left\n');
  }, slow);

  it('exports and imports CSV; a bad file is refused whole with one line per bad row', async () => {
    const out = join(s.env.dir, 'nics.csv');
    expect((await cli('network', 'export', '--tenant', 'acme', out)).code).toBe(0);
    const csv = await readFile(out, 'utf8');
    expect(csv).toBe('vm,mac,kind,addresses,gateway,dns,network,search,mtu,model\n'
      + 'web1,52:54:00:00:00:01,production,10.20.30.40/24 2001:db8::40/64,10.20.30.1,10.20.30.2,dr-prod,dr.example,,e1000\n');
    const bad = join(s.env.dir, 'bad.csv');
    await writeFile(bad, `${csv}web1,52:54:00:00:00:01,test,10.50.10.7/24,10.50.11.1,,dr-test,,,\nweb1,52:54:00:00:00:02,test,dhcp,,,"dr-test&calc.exe",,,\n`);
    const r = await cli('network', 'import', '--tenant', 'acme', bad);
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n')).toEqual([
      'lifeboat-service: CSV: 2 of 3 rows refused; nothing was imported',
      'line 3: vm web1 nic 52:54:00:00:00:01 test.gateway4: 10.50.11.1 is off-link: it is in none of the NIC\'s IPv4 prefixes (10.50.10.7/24)',
      'line 4: vm web1 nic 52:54:00:00:00:02 test.network: network name "dr-test&calc.exe" may hold only letters, digits, \'.\', \'_\' and \'-\'',
      '',
    ]);
    const good = join(s.env.dir, 'good.csv');
    await writeFile(good, `${csv}web1,52:54:00:00:00:01,test,10.50.10.7/24,10.50.10.1,,dr-test,,,e1000\n`);
    expect((await cli('network', 'import', '--tenant', 'acme', good, '--dry-run')).stdout).toBe('dry run: all 2 row(s) would apply: 1 VM(s), 1 NIC(s)\n');
    expect((await cli('network', 'export', '--tenant', 'acme')).stdout).toBe(csv);
    expect((await cli('network', 'import', '--tenant', 'acme', good)).stdout).toBe('imported 2 row(s): 1 VM(s), 1 NIC(s)\n');
    expect((await cli('network', 'export', '--tenant', 'acme')).stdout).toBe(await readFile(good, 'utf8'));
    await refused(cli('network', 'import', '--tenant', 'acme', join(s.env.dir, 'missing.csv')), /^lifeboat-service: .*missing\.csv: no such file or directory\n$/);
  }, slow);
});
