/**
 * Failover networking as a library: NIC settings (settings.ts), tenant mappings and the IP plan
 * (mappings.ts), the NoCloud files (cloud-init.ts), seed media (seed.ts) and readback (readback.ts).
 * Pure logic and files on disk: no catalog, no HTTP; the failover engine, the API and the CLI call it.
 * docs/failover-network.md says what each guest gets and why.
 */
export { type AddressInUse, type DhcpConfig, type FailoverKind, type NicConfig, type NicSettings, type StaticConfig, MaxAddressesPerNic, MaxDnsServers, MaxMtu, MaxNicsPerVm, MaxSearchDomains, MinMtu, MinMtuIpv6, NicConfigSchema, NicSettingsSchema, normaliseMac, parseNicConfig, parseNicSettings, validateVmNics } from './settings.js';
export { type NetworkMapping, type NicPlan, type Origin, type PlannedValue, NetworkMappingSchema, MaxMappingsPerTenant, mapAddress, parseMapping, parseMappings, resolveNicPlan } from './mappings.js';
export { type GuestIdentity, type NoCloudFiles, type UserDataOptions, consoleReportScript, newInstanceId, renderMetaData, renderNetworkConfig, renderNoCloudFiles, renderUserData } from './cloud-init.js';
export { type ConfigDriveInput, type ConfigDriveResult, ConfigDriveVolumeId, NoCloudVolumeId, renderConfigDrive, writeConfigDrive, writeNoCloudSeed } from './seed.js';
export { type Comparison, type Difference, type DifferenceKind, type GuestNetworkTexts, type NicComparison, type Observed, type ObservedNic, type ObservedRoute, ConsoleReportBegin, ConsoleReportEnd, ConsoleReportSections, compareIntent, parseConsoleReport, parseGuestAgentInterfaces, parseGuestNetwork, parseIpAddr, parseIpRoute, parseResolvConf } from './readback.js';
export { networkNameReason, dnsNameReason, hostNameReason } from './names.js';
