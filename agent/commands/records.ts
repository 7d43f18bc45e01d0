/**
 * What the agent keeps of commands (docs/formats/agent-state.md, commands): one record per command
 * it received, `commands/<id>.json`, written before any side effect and after each step, so a killed
 * agent resumes a command from where it was and never runs a finished one again (the service may
 * deliver a command more than once: it is idempotent here, by id); and, per VM failed over,
 * `vms/<vm>/failover.json`: no forward cycle runs for that VM any more. Both are written by the
 * daemon (`lifeboat-agent run`) alone, atomically.
 */
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ErrCorrupt } from '../../shared/errors.js';
import { readJsonFile, writeJsonAtomic } from '../state/atomic.js';
import type { AgentState } from '../state/store.js';

const time = z.iso.datetime();
const IdPattern = /^[a-z0-9][a-z0-9_-]{0,63}$/;

export const CommandRecord = z.object({
  version: z.literal(1),
  id: z.string().regex(IdPattern),
  kind: z.string().min(1),
  vm: z.string().regex(IdPattern),
  payload: z.record(z.string(), z.unknown()),
  receivedAt: time,
  /** running until the result is known locally; then done, failed or cancelled. */
  state: z.enum(['running', 'done', 'failed', 'cancelled']),
  /** The steps done so far, as reported to the service. */
  steps: z.array(z.object({ step: z.string(), detail: z.string().nullable(), at: time })),
  /** planned-failover: the shutdown hook succeeded (it is not run again on resume). */
  shutdownDone: z.boolean(),
  /** planned-failover: the final cycle, shipped and acknowledged (not run again on resume). */
  finalCycle: z.object({ cycle: z.number().int().positive(), capturedAt: time, consistency: z.enum(['crash', 'application']) }).nullable(),
  result: z.record(z.string(), z.unknown()).nullable(),
  error: z.string().nullable(),
  /** The service acknowledged the result. */
  reported: z.boolean(),
});
export type CommandRecord = z.infer<typeof CommandRecord>;

export const FailedOverRecord = z.object({
  version: z.literal(1),
  kind: z.literal('planned'),
  command: z.string().regex(IdPattern),
  failover: z.string().nullable(),
  cycle: z.number().int().positive(),
  capturedAt: time,
  at: time,
});
export type FailedOverRecord = z.infer<typeof FailedOverRecord>;

const commandsDir = (state: AgentState) => join(state.dir, 'commands');
const commandPath = (state: AgentState, id: string) => join(commandsDir(state), `${id}.json`);
const failedOverPath = (state: AgentState, vm: string) => join(state.vmDir(vm), 'failover.json');

function parse<T extends z.ZodType>(schema: T, raw: unknown, path: string): z.infer<T> {
  const r = schema.safeParse(raw);
  if (!r.success) throw ErrCorrupt(`${path}: state file is invalid: ${r.error.issues[0]?.message ?? 'schema mismatch'}; fix or remove it by hand, the agent will not reset it`);
  return r.data;
}

export async function readCommandRecord(state: AgentState, id: string): Promise<CommandRecord | undefined> {
  const path = commandPath(state, id);
  const raw = await readJsonFile(path);
  return raw === undefined ? undefined : parse(CommandRecord, raw, path);
}

export async function writeCommandRecord(state: AgentState, record: CommandRecord): Promise<void> {
  await mkdir(commandsDir(state), { recursive: true, mode: 0o700 });
  await writeJsonAtomic(commandPath(state, record.id), CommandRecord.parse(record));
}

/** Every command record, oldest first. */
export async function listCommandRecords(state: AgentState): Promise<CommandRecord[]> {
  let names: string[];
  try {
    names = await readdir(commandsDir(state));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const records: CommandRecord[] = [];
  for (const n of names) {
    const m = /^([a-z0-9][a-z0-9_-]{0,63})\.json$/.exec(n);
    const r = m ? await readCommandRecord(state, m[1]!) : undefined;
    if (r) records.push(r);
  }
  return records.sort((a, b) => a.receivedAt.localeCompare(b.receivedAt) || a.id.localeCompare(b.id));
}

/** The VM's failed-over record, or undefined while it replicates forward. */
export async function readFailedOver(state: AgentState, vm: string): Promise<FailedOverRecord | undefined> {
  const path = failedOverPath(state, vm);
  const raw = await readJsonFile(path);
  return raw === undefined ? undefined : parse(FailedOverRecord, raw, path);
}

export async function writeFailedOver(state: AgentState, vm: string, record: FailedOverRecord): Promise<void> {
  await writeJsonAtomic(failedOverPath(state, vm), FailedOverRecord.parse(record));
}

/** The VM replicates forward again (failback): its failed-over record goes. */
export async function removeFailedOver(state: AgentState, vm: string): Promise<void> {
  await rm(failedOverPath(state, vm), { force: true });
}

/** For status: "failed over (planned), final cycle N (captured T)". */
export function describeFailedOver(r: Pick<FailedOverRecord, 'kind' | 'cycle' | 'capturedAt'>): string {
  return `failed over (${r.kind}), final cycle ${r.cycle} (captured ${r.capturedAt})`;
}
