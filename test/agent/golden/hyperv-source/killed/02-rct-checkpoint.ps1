# lifeboat hyperv rct-checkpoint: web'01’; Remove-VM * -Force; $(Stop-Computer) `#
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try {
  $name = 'web''01’’; Remove-VM * -Force; $(Stop-Computer) `#'
  $vm = @(Get-VM | Where-Object Name -eq $name)
  if ($vm.Count -ne 1) { throw ('VM ' + $name + ': ' + $vm.Count + ' VMs of that name on this host') }
  $vm = $vm[0]
  $cs = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_ComputerSystem | Where-Object Name -eq ([string]$vm.Id).ToUpper()
  function Wait-LbJob($r, $what) { if ($r.ReturnValue -eq 4096) { $j = Get-CimInstance -InputObject $r.Job; while ($j.JobState -eq 3 -or $j.JobState -eq 4) { Start-Sleep -Milliseconds 200; $j = Get-CimInstance -InputObject $j }; if ($j.JobState -ne 7) { throw ($what + ': ' + $j.ErrorDescription) } } elseif ($r.ReturnValue -ne 0) { throw ($what + ' returned ' + $r.ReturnValue) } }
  $sss = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_VirtualSystemSnapshotService
  $ims = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_ImageManagementService
  $snaps = { @(Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemSettingData | Where-Object VirtualSystemType -eq 'Microsoft:Hyper-V:Snapshot:Recovery') }
  $old = @(& $snaps | Where-Object InstanceID -eq 'Microsoft:CHECKPOINT-LEFT')
  foreach ($o in $old) { Wait-LbJob (Invoke-CimMethod -InputObject $sss -MethodName DestroySnapshot -Arguments @{ AffectedSnapshot = $o }) 'DestroySnapshot' }
  $rp = Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemReferencePoint | Where-Object InstanceID -eq 'Microsoft:RP-11' | Select-Object -First 1
  $before = @(& $snaps | ForEach-Object { $_.InstanceID })
  $ssd = ([wmiclass]'\\.\root\virtualization\v2:Msvm_VirtualSystemSnapshotSettingData').CreateInstance()
  $ssd.ConsistencyLevel = 1; $ssd.GuestBackupType = 1; $ssd.IgnoreNonSnapshottableDisks = $true
  $consistency = 'application'; $warning = $null
  try { Wait-LbJob (Invoke-CimMethod -InputObject $sss -MethodName CreateSnapshot -Arguments @{ AffectedSystem = $cs; SnapshotSettings = $ssd.GetText(1); SnapshotType = [uint16]32768 }) 'CreateSnapshot' } catch { $warning = $_.Exception.Message; $consistency = 'crash'; $ssd.ConsistencyLevel = 2; Wait-LbJob (Invoke-CimMethod -InputObject $sss -MethodName CreateSnapshot -Arguments @{ AffectedSystem = $cs; SnapshotSettings = $ssd.GetText(1); SnapshotType = [uint16]32768 }) 'CreateSnapshot' }
  $snap = @(& $snaps | Where-Object { $before -notcontains $_.InstanceID })
  if ($snap.Count -ne 1) { throw ('the new checkpoint was not found (' + $snap.Count + ' new recovery checkpoints)') }
  $disks = @(foreach ($d in @(Get-VMHardDiskDrive -VM $vm)) {
    $slot = [string]$d.ControllerType + ':' + $d.ControllerNumber + ':' + $d.ControllerLocation
    $file = (Get-VHD -Path $d.Path).ParentPath
    $vhd = Get-VHD -Path $file
    $rct = $null
    if ($null -ne $rp) { $i = [array]::IndexOf(@($rp.VirtualDiskIdentifiers), [string]$vhd.DiskIdentifier); if ($i -ge 0) { $rct = @($rp.ResilientChangeTrackingIdentifiers)[$i] } }
    $ranges = New-Object System.Collections.Generic.List[object]
    if ($null -ne $rct) {
      $at = [uint64]0
      while ($at -lt [uint64]$vhd.Size) {
        $r = Invoke-CimMethod -InputObject $ims -MethodName GetVirtualDiskChanges -Arguments @{ Path = $file; TargetSnapshotId = $rct; ByteOffset = $at; ByteLength = ([uint64]$vhd.Size - $at) }
        if ($r.ReturnValue -ne 0) { throw ('GetVirtualDiskChanges ' + $file + ' returned ' + $r.ReturnValue) }
        for ($k = 0; $k -lt @($r.ChangedByteOffsets).Count; $k++) { $ranges.Add(@([uint64]$r.ChangedByteOffsets[$k], [uint64]$r.ChangedByteLengths[$k])) }
        if ([uint64]$r.ProcessedByteLength -eq 0) { throw ('GetVirtualDiskChanges ' + $file + ' made no progress at ' + $at) }
        $at += [uint64]$r.ProcessedByteLength
      }
    }
    [pscustomobject]@{ slot = $slot; file = $file; size = [uint64]$vhd.Size; lost = ($null -eq $rct); ranges = $ranges.ToArray() }
  })
  [pscustomobject]@{ checkpoint = $snap[0].InstanceID; referencePointFound = ($null -ne $rp); consistency = $consistency; warning = $warning; disks = $disks } | ConvertTo-Json -Compress -Depth 5
} catch {
  [Console]::Error.WriteLine($_.Exception.Message)
  exit 1
}
