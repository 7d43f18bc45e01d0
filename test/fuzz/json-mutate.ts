/**
 * Mutations of JSON request bodies for the fuzz targets: a value somewhere in the document replaced
 * (by any JSON, or by what breaks servers: NUL characters, lone surrogates, 64 KiB strings, nesting
 * thousands deep, numbers beyond 2^53, keys like __proto__), removed, or joined by a new field; then
 * perhaps the text itself damaged (cut, a character changed). Described as data, so fast-check prints
 * and shrinks them.
 */
import fc from 'fast-check';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Values that are valid JSON and hard on whatever stores or checks them. */
const Special = {
  nul: 'a\u0000b',
  surrogate: '\ud800x',
  long: 'x'.repeat(70_000),
  medium: 'y'.repeat(5000),
  deep: 'deep', // 20,000 arrays deep
  wide: 'wide',
  big: 1e308,
  unsafe: 2 ** 53 + 2,
  negative: -1,
  fraction: 0.5,
  negzero: -0,
  empty: '',
  emptyObject: 'emptyObject',
  emptyArray: 'emptyArray',
  sqlish: "'; DROP TABLE vms; --",
  pathish: '../../etc/passwd',
  date: '2026-02-30T25:61:00Z',
  hugeDate: '+275760-09-13T00:00:00.001Z',
} as const;
type SpecialName = keyof typeof Special;

/** Stands for nesting too deep for JSON.stringify itself; bodyText writes it out. */
const DeepMarker = '\u0001deep\u0001';
const DeepText = `${'['.repeat(20_000)}1${']'.repeat(20_000)}`;

function special(name: SpecialName): Json {
  if (name === 'deep') return DeepMarker;
  if (name === 'wide') return Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`k${i}`, i]));
  if (name === 'emptyObject') return {};
  if (name === 'emptyArray') return [];
  return Special[name];
}

export type JsonMutation =
  | { kind: 'set'; path: number[]; value: unknown }
  | { kind: 'special'; path: number[]; value: SpecialName }
  | { kind: 'delete'; path: number[] }
  | { kind: 'add'; path: number[]; key: string; value: unknown };

export type TextMutation =
  | { kind: 'none' }
  | { kind: 'cut'; at: number }
  | { kind: 'char'; at: number; char: string }
  | { kind: 'replace'; text: string };

const path = fc.array(fc.nat({ max: 50 }), { maxLength: 4 });
export const jsonMutationArb: fc.Arbitrary<JsonMutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('set' as const), path, value: fc.jsonValue({ maxDepth: 2 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('special' as const), path, value: fc.constantFrom(...(Object.keys(Special) as SpecialName[])) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), path }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('add' as const), path, key: fc.oneof(fc.constantFrom('__proto__', 'constructor', 'extra', ''), fc.string({ maxLength: 10 })), value: fc.jsonValue({ maxDepth: 1 }) }) },
);
export const textMutationArb: fc.Arbitrary<TextMutation> = fc.oneof(
  { weight: 8, arbitrary: fc.constant({ kind: 'none' as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('char' as const), at: fc.nat(), char: fc.constantFrom('"', '{', '}', ',', '\\', '\u0000', '\ud800', 'é', ' ') }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('replace' as const), text: fc.oneof(fc.string({ maxLength: 50 }), fc.constantFrom('', 'null', '[]', '1', '"x"', 'true', '{"a":1,"a":2}')) }) },
);

/** The seed with the mutations applied (a deep copy; the seed is not changed). */
export function mutateJson(seed: unknown, muts: JsonMutation[]): unknown {
  const root = { value: structuredClone(seed) as Json };
  for (const m of muts) {
    // Walk down: each step picks a child by index, as far as the document goes.
    let parent: Record<string, Json> | Json[] = root as unknown as Record<string, Json>;
    let key: string | number = 'value';
    for (const step of m.path) {
      const node: Json | undefined = (parent as Record<string, Json>)[key as string];
      if (node === null || typeof node !== 'object') break;
      const keys: (string | number)[] = Array.isArray(node) ? node.map((_, i) => i) : Object.keys(node);
      if (keys.length === 0) break;
      parent = node;
      key = keys[step % keys.length]!;
    }
    const slot = parent as Record<string, unknown>;
    const here = slot[key as string];
    switch (m.kind) {
      case 'set': slot[key as string] = structuredClone(m.value); break;
      case 'special': slot[key as string] = special(m.value); break;
      case 'delete':
        if (Array.isArray(parent)) parent.splice(key as number, 1);
        else if (parent !== (root as unknown)) delete slot[key as string];
        break;
      case 'add':
        if (here !== null && typeof here === 'object' && !Array.isArray(here)) Object.defineProperty(here, m.key, { value: structuredClone(m.value), enumerable: true, configurable: true, writable: true });
        else if (Array.isArray(here)) here.push(structuredClone(m.value) as Json);
        break;
    }
  }
  return root.value;
}

/** A mutated document as request text (nesting too deep to stringify written out here). */
export function bodyText(value: unknown): string {
  return JSON.stringify(value).replaceAll(JSON.stringify(DeepMarker), DeepText);
}

/** The body's text with a text mutation applied. */
export function mutateText(text: string, m: TextMutation): string {
  switch (m.kind) {
    case 'none': return text;
    case 'cut': return text.slice(0, m.at % (text.length + 1));
    case 'char': {
      const at = m.at % (text.length + 1);
      return text.slice(0, at) + m.char + text.slice(at + 1);
    }
    case 'replace': return m.text;
  }
}
