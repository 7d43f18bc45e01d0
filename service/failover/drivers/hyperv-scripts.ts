/**
 * The PowerShell of each hyperv step, built from a checked plan (hyperv.ts makes it). Every value goes
 * through hyperv-ps.ts (checked, then psQuote); nothing here concatenates raw text into a script.
 *
 * A VM is ours only while its Notes equal the failover's marker (`lifeboat failover <id>: <vm>`): no
 * step touches a VM of the same name that some other hand made. Prepare writes `… (preparing)` first
 * and the marker last, so a prepare that died half-way is removed and made again by the next one.
 */
import { psQuote as q, Script } from './hyperv-ps.js';

export interface HypervDiskPlan {
  /** The differencing child (made by our writer), as the Hyper-V host names it. */
  child: string;
  /** Its parent, the point's frozen layer, as the Hyper-V host names it. */
  parent: string;
}

export interface HypervFailoverConfig {
  ipv4?: { address: string; mask: string; gateway?: string; dns: string[] };
  ipv6?: { address: string; prefix: number; gateway?: string; dns: string[] };
}

export interface HypervNicPlan {
  /** Adapter name (dr0, dr1, … as in the NIC plan). */
  name: string;
  /** Twelve upper-case hex digits. */
  mac: string;
  switchName: string;
  vlan?: number;
  /** Absent: DHCP (the failover settings are cleared). */
  failover?: HypervFailoverConfig;
}

export interface HypervVmPlan {
  failoverId: string;
  vmName: string;
  marker: string;
  kind: 'test' | 'production';
  generation: 1 | 2;
  secureBootTemplate?: string;
  memoryBytes: number;
  cpus: number;
  vmPath?: string;
  disks: HypervDiskPlan[];
  seeds: string[];
  nics: HypervNicPlan[];
  /** Private switches made for one test run (isolated attachments). */
  privateSwitches: string[];
}

/** The lines that bind $name and $marker and find the VM ($vm, or $null). */
function findVm(s: Script, plan: Pick<HypervVmPlan, 'vmName' | 'marker'>): Script {
  return s.add(`$name = ${q(plan.vmName, 'vm name')}`)
    .add(`$marker = ${q(plan.marker, 'vm notes')}`)
    .add('$vm = Get-VM -Name $name -ErrorAction SilentlyContinue');
}

const notOurs = "if ($null -ne $vm -and $vm.Notes -ne $marker) { throw ('a VM named ' + $name + ' exists on this host and is not this failover''s (its notes: ' + $vm.Notes + ')') }";

export function prepareScript(plan: HypervVmPlan): string {
  const s = findVm(new Script('prepare', plan.vmName), plan);
  s.add("if ($null -ne $vm -and $vm.Notes -eq $marker) { [pscustomobject]@{ created = $false; state = [string]$vm.State } | ConvertTo-Json -Compress; exit 0 }")
    .add("if ($null -ne $vm -and $vm.Notes -ne ($marker + ' (preparing)')) { throw ('a VM named ' + $name + ' exists on this host and is not this failover''s (its notes: ' + $vm.Notes + ')') }")
    .add("if ($null -ne $vm) { if ($vm.State -ne 'Off') { Stop-VM -VM $vm -TurnOff -Force }; Remove-VM -VM $vm -Force }");
  // The child's parent locator is written again in Windows' own terms (our writer wrote POSIX paths).
  for (const d of plan.disks) s.add(`Set-VHD -Path ${q(d.child, 'disk path')} -ParentPath ${q(d.parent, 'parent path')}`);
  for (const sw of plan.privateSwitches) {
    s.add(`if ($null -eq (Get-VMSwitch -Name ${q(sw, 'switch')} -ErrorAction SilentlyContinue)) { New-VMSwitch -Name ${q(sw, 'switch')} -SwitchType Private | Out-Null }`);
  }
  s.add(`$vm = New-VM -Name $name -Generation ${plan.generation} -MemoryStartupBytes ${plan.memoryBytes} -NoVHD${plan.vmPath ? ` -Path ${q(plan.vmPath, 'vm path')}` : ''}`)
    .add("Set-VM -VM $vm -Notes ($marker + ' (preparing)') -CheckpointType Disabled -AutomaticStartAction Nothing -AutomaticStopAction TurnOff")
    .add(`Set-VMMemory -VM $vm -DynamicMemoryEnabled $false -StartupBytes ${plan.memoryBytes}`)
    .add(`Set-VMProcessor -VM $vm -Count ${plan.cpus}`)
    .add('Get-VMNetworkAdapter -VM $vm | Remove-VMNetworkAdapter');
  if (plan.generation === 2) {
    s.add(plan.secureBootTemplate
      ? `Set-VMFirmware -VM $vm -EnableSecureBoot On -SecureBootTemplate ${q(plan.secureBootTemplate, 'secure boot template')}`
      : 'Set-VMFirmware -VM $vm -EnableSecureBoot Off');
  }
  plan.disks.forEach((d, i) => {
    // Generation 1 boots from IDE: the first two disks go there, the rest on SCSI.
    const slot = plan.generation === 1 && i < 2 ? `-ControllerType IDE -ControllerNumber 0 -ControllerLocation ${i}` : `-ControllerType SCSI -ControllerNumber 0 -ControllerLocation ${plan.generation === 1 ? i - 2 : i}`;
    if (plan.generation === 1 && i === 2) s.add('if ($null -eq (Get-VMScsiController -VM $vm)) { Add-VMScsiController -VM $vm }');
    s.add(`Add-VMHardDiskDrive -VM $vm ${slot} -Path ${q(d.child, 'disk path')}`);
  });
  for (const seed of plan.seeds) s.add(`Add-VMDvdDrive -VM $vm -Path ${q(seed, 'seed path')}`);
  // The disk boots, never the seed media (generation 1 tries the CD first by default).
  if (plan.generation === 2 && plan.disks.length > 0) s.add('Set-VMFirmware -VM $vm -FirstBootDevice (Get-VMHardDiskDrive -VM $vm -ControllerType SCSI -ControllerNumber 0 -ControllerLocation 0)');
  if (plan.generation === 1) s.add("Set-VMBios -VM $vm -StartupOrder @('IDE', 'CD', 'LegacyNetworkAdapter', 'Floppy')");
  for (const n of plan.nics) nicLines(s, n, plan.kind);
  s.add('Set-VM -VM $vm -Notes $marker')
    .result({ created: '$true', state: '[string]$vm.State' });
  return s.render();
}

function nicLines(s: Script, n: HypervNicPlan, kind: HypervVmPlan['kind']): void {
  const nic = q(n.name, 'nic name');
  const sw = q(n.switchName, 'switch');
  s.add(`Add-VMNetworkAdapter -VM $vm -Name ${nic}`)
    .add(`Set-VMNetworkAdapter -VMName $name -Name ${nic} -StaticMacAddress ${q(n.mac, 'mac')}`)
    .add(`Connect-VMNetworkAdapter -VMName $name -Name ${nic} -SwitchName ${sw}`);
  if (n.vlan !== undefined) s.add(`Set-VMNetworkAdapterVlan -VMName $name -VMNetworkAdapterName ${nic} -Access -VlanId ${n.vlan}`);
  const args: string[] = [];
  const f = n.failover;
  if (f?.ipv4) {
    args.push(`-IPv4Address ${q(f.ipv4.address)}`, `-IPv4SubnetMask ${q(f.ipv4.mask)}`);
    if (f.ipv4.gateway) args.push(`-IPv4DefaultGateway ${q(f.ipv4.gateway)}`);
    if (f.ipv4.dns[0]) args.push(`-IPv4PreferredDNSServer ${q(f.ipv4.dns[0])}`);
    if (f.ipv4.dns[1]) args.push(`-IPv4AlternateDNSServer ${q(f.ipv4.dns[1])}`);
  } else args.push('-ClearFailoverIPv4Settings');
  if (f?.ipv6) {
    args.push(`-IPv6Address ${q(f.ipv6.address)}`, `-IPv6SubnetPrefixLength ${f.ipv6.prefix}`);
    if (f.ipv6.gateway) args.push(`-IPv6DefaultGateway ${q(f.ipv6.gateway)}`);
    if (f.ipv6.dns[0]) args.push(`-IPv6PreferredDNSServer ${q(f.ipv6.dns[0])}`);
    if (f.ipv6.dns[1]) args.push(`-IPv6AlternateDNSServer ${q(f.ipv6.dns[1])}`);
  } else args.push('-ClearFailoverIPv6Settings');
  // As Hyper-V Replica records it: a test failover's adapter names the switch its test replica joins.
  if (kind === 'test') args.push(`-TestReplicaSwitchName ${sw}`);
  s.add(`Set-VMNetworkAdapterFailoverConfiguration -VMName $name -VMNetworkAdapterName ${nic} ${args.join(' ')}`);
}

export function startScript(plan: Pick<HypervVmPlan, 'vmName' | 'marker'>): string {
  const s = findVm(new Script('start', plan.vmName), plan);
  return s.add("if ($null -eq $vm) { throw ('VM ' + $name + ' does not exist (prepare it first)') }")
    .add(notOurs)
    .add("if ($vm.State -ne 'Running') { Start-VM -VM $vm }")
    .add('$vm = Get-VM -Name $name')
    .result({ state: '[string]$vm.State' })
    .render();
}

export function statusScript(plan: Pick<HypervVmPlan, 'vmName' | 'marker'>): string {
  const s = findVm(new Script('status', plan.vmName), plan);
  return s.add('if ($null -eq $vm) { [pscustomobject]@{ exists = $false } | ConvertTo-Json -Compress; exit 0 }')
    .result({ exists: '$true', ours: '($vm.Notes -eq $marker)', state: '[string]$vm.State', heartbeat: '[string]$vm.Heartbeat', status: '[string]$vm.Status', uptimeSeconds: '[int]$vm.Uptime.TotalSeconds' })
    .render();
}

/** Stops the VM: a guest shutdown first when graceful (within timeoutSec), then turned off. */
export function stopScript(plan: Pick<HypervVmPlan, 'vmName' | 'marker'>, graceful: { timeoutSec: number } | undefined): string {
  const s = findVm(new Script('stop', plan.vmName), plan);
  s.add("if ($null -eq $vm) { [pscustomobject]@{ state = 'Missing' } | ConvertTo-Json -Compress; exit 0 }").add(notOurs);
  if (graceful) s.add(`if ($vm.State -eq 'Running') { $job = Stop-VM -VM $vm -Force -AsJob; Wait-Job -Job $job -Timeout ${graceful.timeoutSec} | Out-Null; Remove-Job -Job $job -Force }`);
  return s.add("$vm = Get-VM -Name $name")
    .add("if ($vm.State -ne 'Off') { Stop-VM -VM $vm -TurnOff -Force }")
    .result({ state: '[string](Get-VM -Name $name).State' })
    .render();
}

/** Lists the VM's disks, so commit can check they are still the failover's children (kept, not merged). */
export function commitScript(plan: Pick<HypervVmPlan, 'vmName' | 'marker'>): string {
  const s = findVm(new Script('commit', plan.vmName), plan);
  return s.add("if ($null -eq $vm) { throw ('VM ' + $name + ' does not exist') }")
    .add(notOurs)
    .add('$disks = @(Get-VMHardDiskDrive -VM $vm | ForEach-Object { $_.Path })')
    .result({ state: '[string]$vm.State', disks: '$disks' })
    .render();
}

/** Removes the VM (turned off first) and the private switches of the run that no adapter uses any more. */
export function removeScript(plan: Pick<HypervVmPlan, 'vmName' | 'marker' | 'privateSwitches'>): string {
  const s = findVm(new Script('cleanup', plan.vmName), plan);
  // A VM left half-made by a prepare that died carries the preparing marker: it is ours too.
  s.add("if ($null -ne $vm -and $vm.Notes -ne $marker -and $vm.Notes -ne ($marker + ' (preparing)')) { throw ('a VM named ' + $name + ' exists on this host and is not this failover''s (its notes: ' + $vm.Notes + ')') }")
    .add("if ($null -ne $vm) { if ($vm.State -ne 'Off') { Stop-VM -VM $vm -TurnOff -Force }; Remove-VM -VM $vm -Force }");
  for (const sw of plan.privateSwitches) {
    s.add(`if ($null -ne (Get-VMSwitch -Name ${q(sw, 'switch')} -ErrorAction SilentlyContinue) -and @(Get-VMNetworkAdapter -All | Where-Object SwitchName -eq ${q(sw, 'switch')}).Count -eq 0) { Remove-VMSwitch -Name ${q(sw, 'switch')} -Force }`);
  }
  return s.result({ removed: '$true' }).render();
}

/** A thumbnail of the VM's screen (Msvm_VirtualSystemManagementService.GetVirtualSystemThumbnailImage): RGB565, little-endian. */
export function screenshotScript(plan: Pick<HypervVmPlan, 'vmName' | 'marker'>, width: number, height: number): string {
  const s = findVm(new Script('screenshot', plan.vmName), plan);
  return s.add("if ($null -eq $vm) { throw ('VM ' + $name + ' does not exist') }")
    .add(notOurs)
    .add("$ms = Get-CimInstance -Namespace 'root\\virtualization\\v2' -ClassName Msvm_VirtualSystemManagementService")
    .add("$cs = Get-CimInstance -Namespace 'root\\virtualization\\v2' -ClassName Msvm_ComputerSystem | Where-Object ElementName -eq $name")
    .add("$vssd = Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemSettingData | Where-Object VirtualSystemType -eq 'Microsoft:Hyper-V:System:Realized'")
    .add(`$r = Invoke-CimMethod -InputObject $ms -MethodName GetVirtualSystemThumbnailImage -Arguments @{ TargetSystem = $vssd; WidthPixels = ${width}; HeightPixels = ${height} }`)
    .add("if ($r.ReturnValue -ne 0) { throw ('GetVirtualSystemThumbnailImage returned ' + $r.ReturnValue) }")
    .result({ width: String(width), height: String(height), rgb565: '[Convert]::ToBase64String($r.ImageData)' })
    .render();
}

/** One WinNAT static mapping: TCP or UDP, a public IPv4 address and port to the VM's DR address, port kept. */
export interface HypervNatMapping {
  protocol: 'TCP' | 'UDP';
  external: string;
  internal: string;
  port: number;
}

/**
 * The failover's public addresses as static mappings of the host's NAT (New-NetNat, made by the
 * hoster with the DR network as its internal prefix): every mapping on `addresses` (this failover's,
 * now and before) is removed, then `mappings` are added. An empty list only removes.
 */
export function publicIpsScript(plan: Pick<HypervVmPlan, 'vmName'>, nat: string, addresses: readonly string[], mappings: readonly HypervNatMapping[]): string {
  const s = new Script('public-ips', plan.vmName);
  s.add(`$nat = ${q(nat, 'nat name')}`)
    .add("if ($null -eq (Get-NetNat -Name $nat -ErrorAction SilentlyContinue)) { throw ('NAT ' + $nat + ' does not exist on this host (New-NetNat -Name ' + $nat + ' -InternalIPInterfaceAddressPrefix <the DR network>)') }")
    .add(`$ours = @(${addresses.map((a) => q(a, 'public address')).join(', ')})`)
    .add('Get-NetNatStaticMapping -NatName $nat -ErrorAction SilentlyContinue | Where-Object { $ours -contains $_.ExternalIPAddress } | Remove-NetNatStaticMapping -Confirm:$false');
  for (const m of mappings) {
    s.add(`Add-NetNatStaticMapping -NatName $nat -Protocol ${m.protocol} -ExternalIPAddress ${q(m.external, 'public address')} -ExternalPort ${m.port} -InternalIPAddress ${q(m.internal, 'dr address')} -InternalPort ${m.port} | Out-Null`);
  }
  return s.result({ mappings: '@(Get-NetNatStaticMapping -NatName $nat -ErrorAction SilentlyContinue | Where-Object { $ours -contains $_.ExternalIPAddress }).Count' }).render();
}
