# lifeboat hyperv cleanup: lifeboat-fo-test-1-web1
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try {
  $name = 'lifeboat-fo-test-1-web1'
  $marker = 'lifeboat failover fo-test-1: web1'
  $vm = Get-VM -Name $name -ErrorAction SilentlyContinue
  if ($null -ne $vm -and $vm.Notes -ne $marker -and $vm.Notes -ne ($marker + ' (preparing)')) { throw ('a VM named ' + $name + ' exists on this host and is not this failover''s (its notes: ' + $vm.Notes + ')') }
  if ($null -ne $vm) { if ($vm.State -ne 'Off') { Stop-VM -VM $vm -TurnOff -Force }; Remove-VM -VM $vm -Force }
  if ($null -ne (Get-VMSwitch -Name 'lifeboat-fo-test-1-test' -ErrorAction SilentlyContinue) -and @(Get-VMNetworkAdapter -All | Where-Object SwitchName -eq 'lifeboat-fo-test-1-test').Count -eq 0) { Remove-VMSwitch -Name 'lifeboat-fo-test-1-test' -Force }
  [pscustomobject]@{ removed = $true } | ConvertTo-Json -Compress
} catch {
  [Console]::Error.WriteLine($_.Exception.Message)
  exit 1
}
