/**
 * The seed media a failed-over VM boots with: its failover IP configuration resolved from the NIC
 * settings (and the tenant's network mappings) for the failover's kind (test settings for a test
 * failover, production otherwise), rendered as a NoCloud `cidata` ISO for cloud-init (a fresh
 * instance-id per failover, so cloud-init applies the network again) and, for Windows guests, an
 * OpenStack config drive (`config-2`) for cloudbase-init. The plan (every value and where it came
 * from) is kept beside them in the work directory for the drill report.
 *
 * `planVmIp` is the same plan from the catalog as it stands (the dry run `failover plan-ip` and the
 * API's ip-plan): the VM's NICs, the tenant's mappings, the addresses the tenant's other VMs hold in
 * each DR network. A conflict (a mapped address equal to an explicit one, two NICs on one address, an
 * address another VM holds in the NIC's DR network) is LifeboatError('conflict') before anything boots.
 * `networkInputs` reads the tenant's part of it, for writeSeeds at the failover's prepare step.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Queryable } from '../catalog/db.js';
import type { FailoverRow } from '../catalog/failovers.js';
import { listVmNics, sourceAddresses } from '../catalog/failovers.js';
import { addressesInNetworks, listMappings, listTenantNics } from '../catalog/networks.js';
import { newInstanceId, renderNoCloudFiles } from './network/cloud-init.js';
import type { NetworkMapping, NicPlan } from './network/mappings.js';
import { resolveNicPlan } from './network/mappings.js';
import { writeConfigDrive, writeNoCloudSeed } from './network/seed.js';
import type { AddressInUse, FailoverKind } from './network/settings.js';
import { parseNicSettings } from './network/settings.js';
import type { FailoverSpec } from './spec.js';

export const NetworkPlanFile = 'network-plan.json';

export interface Seeds {
  paths: string[];
  plan: NicPlan[];
  /** One line for the step's record. */
  describe: string;
}

/** The tenant's side of a VM's IP plan: its mappings and the addresses its other VMs hold per DR network. */
export interface NetworkInputs {
  mappings: NetworkMapping[];
  otherAddressesInNetwork: AddressInUse[];
}

export async function networkInputs(db: Queryable, tenant: string, vm: string, kind: FailoverKind): Promise<NetworkInputs> {
  const others = (await listTenantNics(db, tenant)).filter((n) => n.vm !== vm);
  return { mappings: await listMappings(db, tenant), otherAddressesInNetwork: addressesInNetworks(others, kind) };
}

/** The IP plan a failover of this kind would get now; LifeboatError('conflict') when it cannot be given. */
export async function planVmIp(db: Queryable, tenant: string, vm: string, kind: FailoverKind): Promise<NicPlan[]> {
  const rows = await listVmNics(db, tenant, vm);
  const nics = rows.map((n, i) => parseNicSettings({ ...(n.settings as object), mac: n.mac }, `nics[${i}]`));
  // Mappings start from the addresses an operator recorded, else from those the agent last reported.
  const reported = Object.fromEntries(rows.map((n) => [n.mac, sourceAddresses(n)]));
  const inputs = await networkInputs(db, tenant, vm, kind);
  return resolveNicPlan(nics, inputs.mappings, kind, reported, { otherAddressesInNetwork: inputs.otherAddressesInNetwork });
}

/**
 * @param network the tenant's mappings and other VMs' addresses (networkInputs at prepare); without
 *   it the plan uses the NICs' own settings alone, as before mappings were stored.
 */
export async function writeSeeds(workDir: string, f: Pick<FailoverRow, 'id' | 'kind' | 'vm' | 'vmGenerationId'>, spec: FailoverSpec, network?: NetworkInputs): Promise<Seeds> {
  const nics = spec.nics.map((n, i) => parseNicSettings({ ...(n.settings as object), mac: n.mac }, `nics[${i}]`));
  const reported = Object.fromEntries(spec.nics.map((n) => [n.mac, n.reportedAddresses]));
  const plan = resolveNicPlan(nics, network?.mappings ?? [], f.kind === 'test' ? 'test' : 'production', reported,
    { otherAddressesInNetwork: network?.otherAddressesInNetwork ?? [] });
  const hostname = f.vm.replace(/_/g, '-').slice(0, 63);
  const files = renderNoCloudFiles(plan, { instanceId: newInstanceId(f.id), hostname }, { consoleReport: true });
  const paths = [await writeNoCloudSeed(workDir, files)];
  const notes: string[] = plan.flatMap((p) => p.notes);
  if (spec.hardware.guestOs === 'windows') {
    const drive = await writeConfigDrive(workDir, { uuid: f.vmGenerationId, hostname, nics: plan });
    paths.push(drive.path);
    notes.push(...drive.notes);
  }
  await writeFile(join(workDir, NetworkPlanFile), `${JSON.stringify({ plan, notes }, null, 2)}\n`);
  const describe = `${paths.map((p) => p.split('/').pop()).join(', ')}; ${plan.length} NIC(s)${notes.length ? `; ${notes.join('; ')}` : ''}`;
  return { paths, plan, describe };
}
