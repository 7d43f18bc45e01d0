# lifeboat hyperv commit: lifeboat-fo-real-1-web1
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try {
  $name = 'lifeboat-fo-real-1-web1'
  $marker = 'lifeboat failover fo-real-1: web1'
  $vm = Get-VM -Name $name -ErrorAction SilentlyContinue
  if ($null -eq $vm) { throw ('VM ' + $name + ' does not exist') }
  if ($null -ne $vm -and $vm.Notes -ne $marker) { throw ('a VM named ' + $name + ' exists on this host and is not this failover''s (its notes: ' + $vm.Notes + ')') }
  $disks = @(Get-VMHardDiskDrive -VM $vm | ForEach-Object { $_.Path })
  [pscustomobject]@{ state = [string]$vm.State; disks = $disks } | ConvertTo-Json -Compress
} catch {
  [Console]::Error.WriteLine($_.Exception.Message)
  exit 1
}
