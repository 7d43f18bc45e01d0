/**
 * What the agent's own subcommands share: the --state-dir option and parsers for protect's options.
 * Each parser throws a LifeboatError naming the option, so a mistake is one clear line.
 */
import type { Command } from 'commander';
import { ErrInvalidArgument } from '../../shared/errors.js';
import { parseDuration, parseSize } from '../../shared/units.js';
import { resolveStateDir } from '../state/paths.js';
import { Frequencies, MaxHistory } from '../state/schema.js';
import type { Compression, InitialMode, VmConfig } from '../state/schema.js';
import { AgentState } from '../state/store.js';

export interface StateDirOption { stateDir?: string }

/** Adds --state-dir to a subcommand. */
export function withStateDir(cmd: Command): Command {
  return cmd.option('--state-dir <dir>', 'agent state directory (default: LIFEBOAT_AGENT_STATE or the OS default)');
}

export function agentState(opts: StateDirOption): AgentState {
  return new AgentState(resolveStateDir(opts.stateDir));
}

export function parseFrequency(text: string): VmConfig['frequencyMs'] {
  const ms = (Frequencies as Record<string, VmConfig['frequencyMs']>)[text];
  if (ms === undefined) throw ErrInvalidArgument(`--frequency "${text}" must be 30s, 5m or 15m`);
  return ms;
}

export function parseHistory(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > MaxHistory) throw ErrInvalidArgument(`--history "${text}" must be a whole number of hourly points from 0 to ${MaxHistory}`);
  return n;
}

/** Whole hours from 1 to 12 (the service keeps application-consistent points in hours). */
export function parseAppConsistentEvery(text: string): number {
  const ms = parseDuration(text, '--app-consistent-every');
  if (ms % 3_600_000 !== 0 || ms < 3_600_000 || ms > 12 * 3_600_000) throw ErrInvalidArgument(`--app-consistent-every "${text}" must be whole hours from 1h to 12h`);
  return ms;
}

export function parseCompression(text: string): Compression {
  if (text !== 'zstd' && text !== 'lz4' && text !== 'none') throw ErrInvalidArgument(`--compression "${text}" must be zstd, lz4 or none`);
  return text;
}

export function parseInitial(text: string): InitialMode {
  if (text === 'network' || text === 'existing') return { mode: text };
  if (text.startsWith('media:') && text.length > 'media:'.length) return { mode: 'media', dir: text.slice('media:'.length) };
  throw ErrInvalidArgument(`--initial "${text}" must be network, media:DIR or existing`);
}

/** An ISO time, or HH:MM meaning its next occurrence in local time. */
export function parseStartAt(text: string, now = new Date()): string {
  const hm = /^(\d{1,2}):(\d{2})$/.exec(text);
  if (hm) {
    const [h, m] = [Number(hm[1]), Number(hm[2])];
    if (h > 23 || m > 59) throw ErrInvalidArgument(`--start-at "${text}" is not a time of day`);
    const t = new Date(now);
    t.setHours(h, m, 0, 0);
    if (t.getTime() <= now.getTime()) t.setDate(t.getDate() + 1);
    return t.toISOString();
  }
  const t = new Date(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(t.getTime())) throw ErrInvalidArgument(`--start-at "${text}" must be HH:MM or an ISO time such as 2026-11-26T01:00:00Z`);
  return t.toISOString();
}

/** Bytes per second: "10M", "10MB/s", "100mbit", "1gbit/s". */
export function parseBandwidth(text: string): number {
  const bits = /^\s*(\d+(?:\.\d+)?)\s*([kmg]?)bit(?:\/s)?\s*$/i.exec(text);
  let bytes: number;
  if (bits) bytes = Math.floor(Number(bits[1]) * ({ '': 1, k: 1e3, m: 1e6, g: 1e9 } as Record<string, number>)[bits[2]!.toLowerCase()]! / 8);
  else {
    try {
      bytes = parseSize(text.replace(/\/s$/i, ''), '--bandwidth');
    } catch {
      throw ErrInvalidArgument(`--bandwidth "${text}" must be a rate such as 20M or 20MB/s (bytes per second) or 100mbit`);
    }
  }
  if (bytes < 1024) throw ErrInvalidArgument(`--bandwidth "${text}" is below 1 KiB/s`);
  return bytes;
}
