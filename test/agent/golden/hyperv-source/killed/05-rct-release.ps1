# lifeboat hyperv rct-release: web'01’; Remove-VM * -Force; $(Stop-Computer) `#
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try {
  $name = 'web''01’’; Remove-VM * -Force; $(Stop-Computer) `#'
  $vm = @(Get-VM | Where-Object Name -eq $name)
  if ($vm.Count -ne 1) { throw ('VM ' + $name + ': ' + $vm.Count + ' VMs of that name on this host') }
  $vm = $vm[0]
  $cs = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_ComputerSystem | Where-Object Name -eq ([string]$vm.Id).ToUpper()
  function Wait-LbJob($r, $what) { if ($r.ReturnValue -eq 4096) { $j = Get-CimInstance -InputObject $r.Job; while ($j.JobState -eq 3 -or $j.JobState -eq 4) { Start-Sleep -Milliseconds 200; $j = Get-CimInstance -InputObject $j }; if ($j.JobState -ne 7) { throw ($what + ': ' + $j.ErrorDescription) } } elseif ($r.ReturnValue -ne 0) { throw ($what + ' returned ' + $r.ReturnValue) } }
  $released = 0
  $rps = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_VirtualSystemReferencePointService
  $rp = Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemReferencePoint | Where-Object InstanceID -eq 'Microsoft:RP-11' | Select-Object -First 1
  if ($null -ne $rp) { Wait-LbJob (Invoke-CimMethod -InputObject $rps -MethodName DestroyReferencePoint -Arguments @{ AffectedReferencePoint = $rp }) 'DestroyReferencePoint'; $released++ }
  [pscustomobject]@{ released = $released } | ConvertTo-Json -Compress
} catch {
  [Console]::Error.WriteLine($_.Exception.Message)
  exit 1
}
