# lifeboat hyperv rct-convert: web'01’; Remove-VM * -Force; $(Stop-Computer) `#
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
  $snap = Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemSettingData | Where-Object InstanceID -eq 'Microsoft:CHECKPOINT-12' | Select-Object -First 1
  if ($null -eq $snap) { throw ('checkpoint ' + 'Microsoft:CHECKPOINT-12' + ' of VM ' + $name + ' no longer exists') }
  $before = @(Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemReferencePoint | ForEach-Object { $_.InstanceID })
  Wait-LbJob (Invoke-CimMethod -InputObject $sss -MethodName ConvertToReferencePoint -Arguments @{ AffectedSnapshot = $snap }) 'ConvertToReferencePoint'
  $rp = @(Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemReferencePoint | Where-Object { $before -notcontains $_.InstanceID })
  if ($rp.Count -ne 1) { throw ('the new reference point was not found (' + $rp.Count + ' new reference points)') }
  [pscustomobject]@{ referencePoint = $rp[0].InstanceID } | ConvertTo-Json -Compress
} catch {
  [Console]::Error.WriteLine($_.Exception.Message)
  exit 1
}
