# lifeboat hyperv stop: lifeboat-fo-test-1-web1
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try {
  $name = 'lifeboat-fo-test-1-web1'
  $marker = 'lifeboat failover fo-test-1: web1'
  $vm = Get-VM -Name $name -ErrorAction SilentlyContinue
  if ($null -eq $vm) { [pscustomobject]@{ state = 'Missing' } | ConvertTo-Json -Compress; exit 0 }
  if ($null -ne $vm -and $vm.Notes -ne $marker) { throw ('a VM named ' + $name + ' exists on this host and is not this failover''s (its notes: ' + $vm.Notes + ')') }
  $vm = Get-VM -Name $name
  if ($vm.State -ne 'Off') { Stop-VM -VM $vm -TurnOff -Force }
  [pscustomobject]@{ state = [string](Get-VM -Name $name).State } | ConvertTo-Json -Compress
} catch {
  [Console]::Error.WriteLine($_.Exception.Message)
  exit 1
}
