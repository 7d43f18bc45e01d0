/**
 * Writing PowerShell safely for the hyperv failover driver: the quoting and the script frame are
 * shared with the agent's hyperv source (shared/hyperv/ps.ts); here the values only the driver has,
 * each checked before it is quoted (a MAC, an address parsed by ipaddr.js, a Windows path).
 *
 * Failure: LifeboatError('invalid_argument') naming the field and the value (shortened).
 */
import { ErrInvalidArgument } from '../../../shared/errors.js';
import { familyOf, ipText, parseInterfaceCidr, parseIp, type Family } from '../network/address.js';
import { normaliseMac } from '../network/settings.js';

export { checkInt, checkName, checkWindowsPath, IdPattern, psQuote, Script, scriptStep, SwitchNamePattern, VmNamePattern } from '../../../shared/hyperv/ps.js';

/** A MAC in Hyper-V's spelling: twelve upper-case hex digits, no separators. */
export function hypervMac(value: string, field: string): string {
  const r = normaliseMac(value);
  if (!r.ok) throw ErrInvalidArgument(`${field}: ${r.reason}`);
  return r.mac.replace(/:/g, '').toUpperCase();
}

/** An address of the given family, in canonical text. */
export function checkIp(value: string, family: Family, field: string): string {
  const r = parseIp(value);
  if (!r.ok) throw ErrInvalidArgument(`${field}: ${r.reason}`);
  if (familyOf(r.value) !== family) throw ErrInvalidArgument(`${field}: ${ipText(r.value)} is not an IPv${family} address`);
  return ipText(r.value);
}

/** An interface address with its prefix. */
export function checkCidr(value: string, field: string): { ip: string; prefix: number; family: Family } {
  const r = parseInterfaceCidr(value);
  if (!r.ok) throw ErrInvalidArgument(`${field}: ${r.reason}`);
  return { ip: ipText(r.value.ip), prefix: r.value.prefix, family: r.value.family };
}
