# lifeboat hyperv rct-describe: web'01’; Remove-VM * -Force; $(Stop-Computer) `#
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try {
  $name = 'web''01’’; Remove-VM * -Force; $(Stop-Computer) `#'
  $vm = @(Get-VM | Where-Object Name -eq $name)
  if ($vm.Count -ne 1) { throw ('VM ' + $name + ': ' + $vm.Count + ' VMs of that name on this host') }
  $vm = $vm[0]
  $cs = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_ComputerSystem | Where-Object Name -eq ([string]$vm.Id).ToUpper()
  function Wait-LbJob($r, $what) { if ($r.ReturnValue -eq 4096) { $j = Get-CimInstance -InputObject $r.Job; while ($j.JobState -eq 3 -or $j.JobState -eq 4) { Start-Sleep -Milliseconds 200; $j = Get-CimInstance -InputObject $j }; if ($j.JobState -ne 7) { throw ($what + ': ' + $j.ErrorDescription) } } elseif ($r.ReturnValue -ne 0) { throw ($what + ' returned ' + $r.ReturnValue) } }
  $disks = @(Get-VMHardDiskDrive -VM $vm | ForEach-Object { [pscustomobject]@{ slot = ([string]$_.ControllerType + ':' + $_.ControllerNumber + ':' + $_.ControllerLocation); path = $_.Path } })
  $nics = @(Get-VMNetworkAdapter -VM $vm | ForEach-Object { [pscustomobject]@{ mac = [string]$_.MacAddress; addresses = @($_.IPAddresses) } })
  $secureBoot = if ($vm.Generation -eq 2) { [string](Get-VMFirmware -VM $vm).SecureBoot -eq 'On' } else { $false }
  [pscustomobject]@{ generation = [int]$vm.Generation; cpus = [int]$vm.ProcessorCount; memoryBytes = [int64]$vm.MemoryStartup; secureBoot = $secureBoot; state = [string]$vm.State; version = [string]$vm.Version; disks = $disks; nics = $nics } | ConvertTo-Json -Compress -Depth 4
} catch {
  [Console]::Error.WriteLine($_.Exception.Message)
  exit 1
}
