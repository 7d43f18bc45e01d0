/**
 * The PowerShell the hyperv source runs on a Hyper-V host (Windows Server 2016 or later: resilient
 * change tracking needs a VM configuration version of 2016 or later), one script per step, each
 * answering one line of JSON (shared/hyperv/ps.ts Script). The steps of a cycle (docs/agent.md "The hyperv source"):
 *
 * - rct-describe: the VM as Hyper-V describes it (generation, vCPUs, memory, Secure Boot, each disk's
 *   controller slot and file, each NIC's MAC and the guest's addresses from KVP data exchange).
 * - rct-checkpoint: a production checkpoint (Msvm_VirtualSystemSnapshotService.CreateSnapshot, a
 *   recovery snapshot with ConsistencyLevel 1: VSS in the guest; a guest that cannot gives a
 *   crash-consistent one, with the reason), then per disk the file the checkpoint froze (the parent of
 *   the differencing disk the VM now writes) and the ranges changed since the reference point the
 *   agent names (Msvm_ImageManagementService.GetVirtualDiskChanges against its RCT id). A reference
 *   point that is gone, or that does not know a disk, answers `lost` for that disk.
 * - rct-convert: the checkpoint converted to a reference point (ConvertToReferencePoint), which merges
 *   the differencing disk back and keeps only the RCT ids.
 * - rct-release: a reference point destroyed (DestroyReferencePoint) and/or a checkpoint destroyed
 *   (DestroySnapshot), each only when it still exists.
 * - rct-stop: the guest shut down (Stop-VM through integration services) for a planned failover.
 *
 * Injection: the VM's name and every id the agent sends go in as single-quoted literals (psQuote) and
 * are compared with -eq, never passed to a cmdlet's -Name (which takes wildcards): the VM is found as
 * `Get-VM | Where-Object Name -eq $name` and handed on as an object.
 */
import { psQuote as q, Script } from '../../shared/hyperv/ps.js';

const Ns = "'root\\virtualization\\v2'";

/** Binds $name, $vm (the one VM of that name), $cs (its Msvm_ComputerSystem) and the Wait-LbJob helper. */
function vmScript(step: string, vmName: string): Script {
  return new Script(step, vmName)
    .add(`$name = ${q(vmName, 'vm name')}`)
    .add('$vm = @(Get-VM | Where-Object Name -eq $name)')
    .add("if ($vm.Count -ne 1) { throw ('VM ' + $name + ': ' + $vm.Count + ' VMs of that name on this host') }")
    .add('$vm = $vm[0]')
    .add(`$cs = Get-CimInstance -Namespace ${Ns} -ClassName Msvm_ComputerSystem | Where-Object Name -eq ([string]$vm.Id).ToUpper()`)
    // A CIM method answers 0 (done) or 4096 (a job to wait for); anything else, or a failed job, ends the script.
    .add("function Wait-LbJob($r, $what) { if ($r.ReturnValue -eq 4096) { $j = Get-CimInstance -InputObject $r.Job; while ($j.JobState -eq 3 -or $j.JobState -eq 4) { Start-Sleep -Milliseconds 200; $j = Get-CimInstance -InputObject $j }; if ($j.JobState -ne 7) { throw ($what + ': ' + $j.ErrorDescription) } } elseif ($r.ReturnValue -ne 0) { throw ($what + ' returned ' + $r.ReturnValue) } }");
}

export function describeScript(vmName: string): string {
  return vmScript('rct-describe', vmName)
    .add("$disks = @(Get-VMHardDiskDrive -VM $vm | ForEach-Object { [pscustomobject]@{ slot = ([string]$_.ControllerType + ':' + $_.ControllerNumber + ':' + $_.ControllerLocation); path = $_.Path } })")
    .add('$nics = @(Get-VMNetworkAdapter -VM $vm | ForEach-Object { [pscustomobject]@{ mac = [string]$_.MacAddress; addresses = @($_.IPAddresses) } })')
    .add("$secureBoot = if ($vm.Generation -eq 2) { [string](Get-VMFirmware -VM $vm).SecureBoot -eq 'On' } else { $false }")
    .result({
      generation: '[int]$vm.Generation', cpus: '[int]$vm.ProcessorCount', memoryBytes: '[int64]$vm.MemoryStartup', secureBoot: '$secureBoot',
      state: '[string]$vm.State', version: '[string]$vm.Version', disks: '$disks', nics: '$nics',
    }, 4)
    .render();
}

/**
 * A production checkpoint and, per disk, its frozen file and the ranges changed since `referencePoint`
 * (null: none yet, every disk is `lost`). `leftover`: a checkpoint an earlier cycle made and did not
 * get to release (destroyed first, when it still exists).
 */
export function checkpointScript(vmName: string, referencePoint: string | null, leftover: string | null): string {
  const s = vmScript('rct-checkpoint', vmName)
    .add(`$sss = Get-CimInstance -Namespace ${Ns} -ClassName Msvm_VirtualSystemSnapshotService`)
    .add(`$ims = Get-CimInstance -Namespace ${Ns} -ClassName Msvm_ImageManagementService`)
    .add("$snaps = { @(Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemSettingData | Where-Object VirtualSystemType -eq 'Microsoft:Hyper-V:Snapshot:Recovery') }");
  if (leftover) {
    s.add(`$old = @(& $snaps | Where-Object InstanceID -eq ${q(leftover, 'checkpoint id')})`)
      .add("foreach ($o in $old) { Wait-LbJob (Invoke-CimMethod -InputObject $sss -MethodName DestroySnapshot -Arguments @{ AffectedSnapshot = $o }) 'DestroySnapshot' }");
  }
  s.add(referencePoint
    ? `$rp = Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemReferencePoint | Where-Object InstanceID -eq ${q(referencePoint, 'reference point id')} | Select-Object -First 1`
    : '$rp = $null')
    .add('$before = @(& $snaps | ForEach-Object { $_.InstanceID })')
    .add("$ssd = ([wmiclass]'\\\\.\\root\\virtualization\\v2:Msvm_VirtualSystemSnapshotSettingData').CreateInstance()")
    .add('$ssd.ConsistencyLevel = 1; $ssd.GuestBackupType = 1; $ssd.IgnoreNonSnapshottableDisks = $true')
    .add("$consistency = 'application'; $warning = $null")
    .add("try { Wait-LbJob (Invoke-CimMethod -InputObject $sss -MethodName CreateSnapshot -Arguments @{ AffectedSystem = $cs; SnapshotSettings = $ssd.GetText(1); SnapshotType = [uint16]32768 }) 'CreateSnapshot' } catch { $warning = $_.Exception.Message; $consistency = 'crash'; $ssd.ConsistencyLevel = 2; Wait-LbJob (Invoke-CimMethod -InputObject $sss -MethodName CreateSnapshot -Arguments @{ AffectedSystem = $cs; SnapshotSettings = $ssd.GetText(1); SnapshotType = [uint16]32768 }) 'CreateSnapshot' }")
    .add('$snap = @(& $snaps | Where-Object { $before -notcontains $_.InstanceID })')
    .add("if ($snap.Count -ne 1) { throw ('the new checkpoint was not found (' + $snap.Count + ' new recovery checkpoints)') }")
    // Each drive now writes a differencing disk whose parent is the file the checkpoint froze.
    .add('$disks = @(foreach ($d in @(Get-VMHardDiskDrive -VM $vm)) {')
    .add("  $slot = [string]$d.ControllerType + ':' + $d.ControllerNumber + ':' + $d.ControllerLocation")
    .add('  $file = (Get-VHD -Path $d.Path).ParentPath')
    .add('  $vhd = Get-VHD -Path $file')
    .add('  $rct = $null')
    .add('  if ($null -ne $rp) { $i = [array]::IndexOf(@($rp.VirtualDiskIdentifiers), [string]$vhd.DiskIdentifier); if ($i -ge 0) { $rct = @($rp.ResilientChangeTrackingIdentifiers)[$i] } }')
    .add('  $ranges = New-Object System.Collections.Generic.List[object]')
    .add('  if ($null -ne $rct) {')
    .add('    $at = [uint64]0')
    .add('    while ($at -lt [uint64]$vhd.Size) {')
    .add("      $r = Invoke-CimMethod -InputObject $ims -MethodName GetVirtualDiskChanges -Arguments @{ Path = $file; TargetSnapshotId = $rct; ByteOffset = $at; ByteLength = ([uint64]$vhd.Size - $at) }")
    .add("      if ($r.ReturnValue -ne 0) { throw ('GetVirtualDiskChanges ' + $file + ' returned ' + $r.ReturnValue) }")
    .add('      for ($k = 0; $k -lt @($r.ChangedByteOffsets).Count; $k++) { $ranges.Add(@([uint64]$r.ChangedByteOffsets[$k], [uint64]$r.ChangedByteLengths[$k])) }')
    .add("      if ([uint64]$r.ProcessedByteLength -eq 0) { throw ('GetVirtualDiskChanges ' + $file + ' made no progress at ' + $at) }")
    .add('      $at += [uint64]$r.ProcessedByteLength')
    .add('    }')
    .add('  }')
    .add('  [pscustomobject]@{ slot = $slot; file = $file; size = [uint64]$vhd.Size; lost = ($null -eq $rct); ranges = $ranges.ToArray() }')
    .add('})');
  return s.result({
    checkpoint: '$snap[0].InstanceID', referencePointFound: '($null -ne $rp)', consistency: '$consistency', warning: '$warning', disks: '$disks',
  }, 5).render();
}

/** Converts the checkpoint to a reference point; answers its id. */
export function convertScript(vmName: string, checkpoint: string): string {
  return vmScript('rct-convert', vmName)
    .add(`$sss = Get-CimInstance -Namespace ${Ns} -ClassName Msvm_VirtualSystemSnapshotService`)
    .add(`$snap = Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemSettingData | Where-Object InstanceID -eq ${q(checkpoint, 'checkpoint id')} | Select-Object -First 1`)
    .add("if ($null -eq $snap) { throw ('checkpoint ' + " + q(checkpoint, 'checkpoint id') + " + ' of VM ' + $name + ' no longer exists') }")
    .add('$before = @(Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemReferencePoint | ForEach-Object { $_.InstanceID })')
    .add("Wait-LbJob (Invoke-CimMethod -InputObject $sss -MethodName ConvertToReferencePoint -Arguments @{ AffectedSnapshot = $snap }) 'ConvertToReferencePoint'")
    .add('$rp = @(Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemReferencePoint | Where-Object { $before -notcontains $_.InstanceID })')
    .add("if ($rp.Count -ne 1) { throw ('the new reference point was not found (' + $rp.Count + ' new reference points)') }")
    .result({ referencePoint: '$rp[0].InstanceID' })
    .render();
}

/** Destroys a reference point and/or a checkpoint of the VM, each only when it still exists. */
export function releaseScript(vmName: string, what: { referencePoint?: string; checkpoint?: string }): string {
  const s = vmScript('rct-release', vmName).add('$released = 0');
  if (what.checkpoint) {
    s.add(`$sss = Get-CimInstance -Namespace ${Ns} -ClassName Msvm_VirtualSystemSnapshotService`)
      .add(`$snap = Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemSettingData | Where-Object InstanceID -eq ${q(what.checkpoint, 'checkpoint id')} | Select-Object -First 1`)
      .add("if ($null -ne $snap) { Wait-LbJob (Invoke-CimMethod -InputObject $sss -MethodName DestroySnapshot -Arguments @{ AffectedSnapshot = $snap }) 'DestroySnapshot'; $released++ }");
  }
  if (what.referencePoint) {
    s.add(`$rps = Get-CimInstance -Namespace ${Ns} -ClassName Msvm_VirtualSystemReferencePointService`)
      .add(`$rp = Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemReferencePoint | Where-Object InstanceID -eq ${q(what.referencePoint, 'reference point id')} | Select-Object -First 1`)
      .add("if ($null -ne $rp) { Wait-LbJob (Invoke-CimMethod -InputObject $rps -MethodName DestroyReferencePoint -Arguments @{ AffectedReferencePoint = $rp }) 'DestroyReferencePoint'; $released++ }");
  }
  return s.result({ released: '$released' }).render();
}

/** Shuts the guest down through integration services and waits (timeoutSec) until the VM is off. */
export function stopScript(vmName: string, timeoutSec: number): string {
  return vmScript('rct-stop', vmName)
    .add(`if ($vm.State -ne 'Off') { $job = Stop-VM -VM $vm -Force -AsJob; Wait-Job -Job $job -Timeout ${Math.trunc(timeoutSec)} | Out-Null; Remove-Job -Job $job -Force }`)
    .result({ state: '[string](Get-VM -Id $vm.Id).State' })
    .render();
}
