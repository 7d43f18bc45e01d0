/**
 * Tenant scoping of agent requests: a VM is looked up only within the certificate's tenant (another
 * tenant's VM is indistinguishable from a missing one), and a server may speak for a VM only when its
 * authorization entry is in the VM's trust group.
 */
import type { AgentIdentity } from '../agent-api/auth.js';
import type { Queryable } from '../catalog/db.js';
import type { DiskRow, VmRow } from '../catalog/vms.js';
import { getVm, getVmDisk } from '../catalog/vms.js';
import { ErrConflict, ErrForbidden, ErrNotFoundHere } from '../errors.js';
import { authorizationFor } from '../trust/enroll.js';

/** The agent's tenant's VM, checked for trust group; 404 when the tenant has no such VM. */
export async function vmForAgent(db: Queryable, agent: AgentIdentity, vm: string, options: { forUpdate?: boolean; protectedOnly?: boolean } = {}): Promise<VmRow> {
  const row = await getVm(db, agent.tenant, vm, options.forUpdate);
  if (!row) throw ErrNotFoundHere(`no VM ${vm}`);
  await checkTrustGroup(db, agent, row);
  if (options.protectedOnly && !row.protected) throw ErrConflict('vm_unprotected', `VM ${vm} is not protected; register it again first`);
  return row;
}

export async function checkTrustGroup(db: Queryable, agent: AgentIdentity, vm: VmRow): Promise<void> {
  if (vm.serverFqdn === agent.fqdn) return;
  const entry = await authorizationFor(db, agent.tenant, agent.fqdn);
  if (entry.trustGroup !== vm.trustGroup) {
    throw ErrForbidden('other_trust_group', `VM ${vm.name} replicates from ${vm.serverFqdn} (trust group ${vm.trustGroup}); ${agent.fqdn} is in trust group ${entry.trustGroup}`);
  }
}

/** The VM's disk for an agent request; 404 when there is none. */
export async function diskForAgent(db: Queryable, agent: AgentIdentity, vm: string, disk: string, options: { forUpdate?: boolean } = {}): Promise<{ vm: VmRow; disk: DiskRow }> {
  // One query for both (every grant and commit of an agent comes here); the VM's checks and its
  // 404 come from vmForAgent when the pair is missing, as before.
  const both = await getVmDisk(db, agent.tenant, vm, disk, options.forUpdate);
  if (!both) {
    await vmForAgent(db, agent, vm, { protectedOnly: true });
    throw ErrNotFoundHere(`VM ${vm} has no disk ${disk}`);
  }
  await checkTrustGroup(db, agent, both.vm);
  if (!both.vm.protected) throw ErrConflict('vm_unprotected', `VM ${vm} is not protected; register it again first`);
  return both;
}
