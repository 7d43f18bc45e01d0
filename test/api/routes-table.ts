/**
 * The table of routes and roles in docs/api.md, as the tests that walk it read it (probes.ts makes
 * each path concrete).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Role } from '../../service/trust/roles.js';
import { Roles } from '../../service/trust/roles.js';

export interface Row { method: string; path: string; roles: Role[] }

export async function tableRows(): Promise<Row[]> {
  const doc = await readFile(join(import.meta.dirname, '..', '..', 'docs', 'api.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Routes and roles'), doc.indexOf('\n## ', doc.indexOf('## Routes and roles') + 5));
  const rows: Row[] = [];
  for (const line of section.split('\n')) {
    const m = /^\| (GET|POST|PUT|PATCH|DELETE) \| `([^`]+)` \| ([^|]+) \|/.exec(line);
    if (!m) continue;
    const roles = m[3]!.split(',').map((r) => r.trim());
    for (const r of roles) if (!(Roles as readonly string[]).includes(r)) throw new Error(`docs/api.md: ${m[1]} ${m[2]}: unknown role ${r}`);
    rows.push({ method: m[1]!, path: m[2]!, roles: roles as Role[] });
  }
  return rows;
}
