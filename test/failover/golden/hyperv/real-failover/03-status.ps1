# lifeboat hyperv status: lifeboat-fo-real-1-web1
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try {
  $name = 'lifeboat-fo-real-1-web1'
  $marker = 'lifeboat failover fo-real-1: web1'
  $vm = Get-VM -Name $name -ErrorAction SilentlyContinue
  if ($null -eq $vm) { [pscustomobject]@{ exists = $false } | ConvertTo-Json -Compress; exit 0 }
  [pscustomobject]@{ exists = $true; ours = ($vm.Notes -eq $marker); state = [string]$vm.State; heartbeat = [string]$vm.Heartbeat; status = [string]$vm.Status; uptimeSeconds = [int]$vm.Uptime.TotalSeconds } | ConvertTo-Json -Compress
} catch {
  [Console]::Error.WriteLine($_.Exception.Message)
  exit 1
}
