# lifeboat hyperv public-ips: lifeboat-fo-pub-1-web1
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try {
  $nat = 'lifeboat-dr'
  if ($null -eq (Get-NetNat -Name $nat -ErrorAction SilentlyContinue)) { throw ('NAT ' + $nat + ' does not exist on this host (New-NetNat -Name ' + $nat + ' -InternalIPInterfaceAddressPrefix <the DR network>)') }
  $ours = @('203.0.113.10', '203.0.113.11')
  Get-NetNatStaticMapping -NatName $nat -ErrorAction SilentlyContinue | Where-Object { $ours -contains $_.ExternalIPAddress } | Remove-NetNatStaticMapping -Confirm:$false
  Add-NetNatStaticMapping -NatName $nat -Protocol TCP -ExternalIPAddress '203.0.113.10' -ExternalPort 80 -InternalIPAddress '10.50.10.7' -InternalPort 80 | Out-Null
  Add-NetNatStaticMapping -NatName $nat -Protocol TCP -ExternalIPAddress '203.0.113.10' -ExternalPort 443 -InternalIPAddress '10.50.10.7' -InternalPort 443 | Out-Null
  Add-NetNatStaticMapping -NatName $nat -Protocol UDP -ExternalIPAddress '203.0.113.10' -ExternalPort 5000 -InternalIPAddress '10.50.10.7' -InternalPort 5000 | Out-Null
  Add-NetNatStaticMapping -NatName $nat -Protocol UDP -ExternalIPAddress '203.0.113.10' -ExternalPort 5001 -InternalIPAddress '10.50.10.7' -InternalPort 5001 | Out-Null
  Add-NetNatStaticMapping -NatName $nat -Protocol UDP -ExternalIPAddress '203.0.113.10' -ExternalPort 5002 -InternalIPAddress '10.50.10.7' -InternalPort 5002 | Out-Null
  [pscustomobject]@{ mappings = @(Get-NetNatStaticMapping -NatName $nat -ErrorAction SilentlyContinue | Where-Object { $ours -contains $_.ExternalIPAddress }).Count } | ConvertTo-Json -Compress
} catch {
  [Console]::Error.WriteLine($_.Exception.Message)
  exit 1
}
