# lifeboat hyperv prepare: lifeboat-fo-real-1-web1
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try {
  $name = 'lifeboat-fo-real-1-web1'
  $marker = 'lifeboat failover fo-real-1: web1'
  $vm = Get-VM -Name $name -ErrorAction SilentlyContinue
  if ($null -ne $vm -and $vm.Notes -eq $marker) { [pscustomobject]@{ created = $false; state = [string]$vm.State } | ConvertTo-Json -Compress; exit 0 }
  if ($null -ne $vm -and $vm.Notes -ne ($marker + ' (preparing)')) { throw ('a VM named ' + $name + ' exists on this host and is not this failover''s (its notes: ' + $vm.Notes + ')') }
  if ($null -ne $vm) { if ($vm.State -ne 'Off') { Stop-VM -VM $vm -TurnOff -Force }; Remove-VM -VM $vm -Force }
  Set-VHD -Path 'D:\Replica\failover\fo-real-1\d0.vhdx' -ParentPath 'D:\Replica\tenants\t1\vms\web1\disks\d0\point-0001.vhdx'
  Set-VHD -Path 'D:\Replica\failover\fo-real-1\d1.vhdx' -ParentPath 'D:\Replica\tenants\t1\vms\web1\disks\d1\base.vhdx'
  $vm = New-VM -Name $name -Generation 1 -MemoryStartupBytes 2147483648 -NoVHD
  Set-VM -VM $vm -Notes ($marker + ' (preparing)') -CheckpointType Disabled -AutomaticStartAction Nothing -AutomaticStopAction TurnOff
  Set-VMMemory -VM $vm -DynamicMemoryEnabled $false -StartupBytes 2147483648
  Set-VMProcessor -VM $vm -Count 2
  Get-VMNetworkAdapter -VM $vm | Remove-VMNetworkAdapter
  Add-VMHardDiskDrive -VM $vm -ControllerType IDE -ControllerNumber 0 -ControllerLocation 0 -Path 'D:\Replica\failover\fo-real-1\d0.vhdx'
  Add-VMHardDiskDrive -VM $vm -ControllerType IDE -ControllerNumber 0 -ControllerLocation 1 -Path 'D:\Replica\failover\fo-real-1\d1.vhdx'
  Add-VMDvdDrive -VM $vm -Path 'D:\Replica\failover\fo-real-1\seed0-cidata.iso'
  Set-VMBios -VM $vm -StartupOrder @('IDE', 'CD', 'LegacyNetworkAdapter', 'Floppy')
  Add-VMNetworkAdapter -VM $vm -Name 'dr0'
  Set-VMNetworkAdapter -VMName $name -Name 'dr0' -StaticMacAddress '00155D000001'
  Connect-VMNetworkAdapter -VMName $name -Name 'dr0' -SwitchName 'DR Production'
  Set-VMNetworkAdapterVlan -VMName $name -VMNetworkAdapterName 'dr0' -Access -VlanId 120
  Set-VMNetworkAdapterFailoverConfiguration -VMName $name -VMNetworkAdapterName 'dr0' -IPv4Address '10.50.10.7' -IPv4SubnetMask '255.255.255.0' -IPv4DefaultGateway '10.50.10.1' -IPv4PreferredDNSServer '10.50.10.2' -IPv4AlternateDNSServer '10.50.10.3' -IPv6Address '2001:db8:50::7' -IPv6SubnetPrefixLength 64 -IPv6DefaultGateway '2001:db8:50::1' -IPv6PreferredDNSServer '2001:db8:50::2'
  Add-VMNetworkAdapter -VM $vm -Name 'dr1'
  Set-VMNetworkAdapter -VMName $name -Name 'dr1' -StaticMacAddress '00155D000002'
  Connect-VMNetworkAdapter -VMName $name -Name 'dr1' -SwitchName 'DR Production'
  Set-VMNetworkAdapterFailoverConfiguration -VMName $name -VMNetworkAdapterName 'dr1' -ClearFailoverIPv4Settings -ClearFailoverIPv6Settings
  Set-VM -VM $vm -Notes $marker
  [pscustomobject]@{ created = $true; state = [string]$vm.State } | ConvertTo-Json -Compress
} catch {
  [Console]::Error.WriteLine($_.Exception.Message)
  exit 1
}
