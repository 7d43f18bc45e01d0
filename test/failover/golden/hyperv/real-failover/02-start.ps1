# lifeboat hyperv start: lifeboat-fo-real-1-web1
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try {
  $name = 'lifeboat-fo-real-1-web1'
  $marker = 'lifeboat failover fo-real-1: web1'
  $vm = Get-VM -Name $name -ErrorAction SilentlyContinue
  if ($null -eq $vm) { throw ('VM ' + $name + ' does not exist (prepare it first)') }
  if ($null -ne $vm -and $vm.Notes -ne $marker) { throw ('a VM named ' + $name + ' exists on this host and is not this failover''s (its notes: ' + $vm.Notes + ')') }
  if ($vm.State -ne 'Running') { Start-VM -VM $vm }
  $vm = Get-VM -Name $name
  [pscustomobject]@{ state = [string]$vm.State } | ConvertTo-Json -Compress
} catch {
  [Console]::Error.WriteLine($_.Exception.Message)
  exit 1
}
