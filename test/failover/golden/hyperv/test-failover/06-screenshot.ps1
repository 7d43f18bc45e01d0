# lifeboat hyperv screenshot: lifeboat-fo-test-1-web1
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try {
  $name = 'lifeboat-fo-test-1-web1'
  $marker = 'lifeboat failover fo-test-1: web1'
  $vm = Get-VM -Name $name -ErrorAction SilentlyContinue
  if ($null -eq $vm) { throw ('VM ' + $name + ' does not exist') }
  if ($null -ne $vm -and $vm.Notes -ne $marker) { throw ('a VM named ' + $name + ' exists on this host and is not this failover''s (its notes: ' + $vm.Notes + ')') }
  $ms = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_VirtualSystemManagementService
  $cs = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_ComputerSystem | Where-Object ElementName -eq $name
  $vssd = Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemSettingData | Where-Object VirtualSystemType -eq 'Microsoft:Hyper-V:System:Realized'
  $r = Invoke-CimMethod -InputObject $ms -MethodName GetVirtualSystemThumbnailImage -Arguments @{ TargetSystem = $vssd; WidthPixels = 640; HeightPixels = 480 }
  if ($r.ReturnValue -ne 0) { throw ('GetVirtualSystemThumbnailImage returned ' + $r.ReturnValue) }
  [pscustomobject]@{ width = 640; height = 480; rgb565 = [Convert]::ToBase64String($r.ImageData) } | ConvertTo-Json -Compress
} catch {
  [Console]::Error.WriteLine($_.Exception.Message)
  exit 1
}
