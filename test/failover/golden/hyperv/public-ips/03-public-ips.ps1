# lifeboat hyperv public-ips: lifeboat-fo-pub-1-web1
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try {
  $nat = 'lifeboat-dr'
  if ($null -eq (Get-NetNat -Name $nat -ErrorAction SilentlyContinue)) { throw ('NAT ' + $nat + ' does not exist on this host (New-NetNat -Name ' + $nat + ' -InternalIPInterfaceAddressPrefix <the DR network>)') }
  $ours = @('203.0.113.10')
  Get-NetNatStaticMapping -NatName $nat -ErrorAction SilentlyContinue | Where-Object { $ours -contains $_.ExternalIPAddress } | Remove-NetNatStaticMapping -Confirm:$false
  [pscustomobject]@{ mappings = @(Get-NetNatStaticMapping -NatName $nat -ErrorAction SilentlyContinue | Where-Object { $ours -contains $_.ExternalIPAddress }).Count } | ConvertTo-Json -Compress
} catch {
  [Console]::Error.WriteLine($_.Exception.Message)
  exit 1
}
