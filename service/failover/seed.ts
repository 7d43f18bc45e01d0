/**
 * The seed media a failed-over VM boots with: its failover IP configuration resolved from the NIC
 * settings (and the tenant's network mappings) for the failover's kind (test settings for a test
 * failover, production otherwise), rendered as a NoCloud `cidata` ISO for cloud-init (a fresh
 * instance-id per failover, so cloud-init applies the network again) and, for Windows guests, an
 * OpenStack config drive (`config-2`) for cloudbase-init. The plan (every value and where it came
 * from) is kept beside them in the work directory for the drill report.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FailoverRow } from '../catalog/failovers.js';
import { newInstanceId, renderNoCloudFiles } from './network/cloud-init.js';
import type { NicPlan } from './network/mappings.js';
import { resolveNicPlan } from './network/mappings.js';
import { writeConfigDrive, writeNoCloudSeed } from './network/seed.js';
import { parseNicSettings } from './network/settings.js';
import type { FailoverSpec } from './spec.js';

export const NetworkPlanFile = 'network-plan.json';

export interface Seeds {
  paths: string[];
  plan: NicPlan[];
  /** One line for the step's record. */
  describe: string;
}

export async function writeSeeds(workDir: string, f: Pick<FailoverRow, 'id' | 'kind' | 'vm' | 'vmGenerationId'>, spec: FailoverSpec): Promise<Seeds> {
  const nics = spec.nics.map((n, i) => parseNicSettings({ ...(n.settings as object), mac: n.mac }, `nics[${i}]`));
  const reported = Object.fromEntries(spec.nics.map((n) => [n.mac, n.reportedAddresses]));
  const plan = resolveNicPlan(nics, [], f.kind === 'test' ? 'test' : 'production', reported);
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
