/**
 * A Dockerfile parser and a linter with the hadolint rules that matter for infra/docker/Dockerfile
 * (no image can be built here, so the file is checked statically).
 * Input: the Dockerfile's text, and for the rules that look at the build context the repository root
 * and the .dockerignore patterns. Output: instructions (one per logical line, continuations joined)
 * with their stage, and findings as `{ rule, line, message }`; an empty list means the file passes.
 * Failure: a line the parser cannot read is a finding (rule DF000), never an exception.
 *
 * Rules (hadolint's numbers where one exists):
 *   DL3006/DL3007 base images name a tag, and not `latest`; DL3000 WORKDIR absolute; DL3002 the last
 *   USER of every target stage is not root, and every target sets one; DL3004 no sudo; DL3005 no
 *   apt-get upgrade; DL3009/DL3015/DL3014 apt-get install runs after apt-get update in the same RUN,
 *   with -y and --no-install-recommends, and removes /var/lib/apt/lists; DL3020 COPY, not ADD, for
 *   local files; DL3022 COPY --from names an earlier stage; DL4000 no MAINTAINER; DL4003/DL4004 at
 *   most one CMD and one ENTRYPOINT per stage; DL3011 EXPOSE ports in range; DL3059-like: npm ci, not
 *   npm install; LB001 every target stage has a HEALTHCHECK (NONE counts when said); LB002 COPY sources
 *   exist in the build context and are not excluded by .dockerignore; LB003 unknown instruction;
 *   LB004 duplicate stage names.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';

export interface Instruction {
  /** Upper-case keyword (FROM, RUN, ...). */
  keyword: string;
  /** Everything after the keyword, continuations joined with a space. */
  args: string;
  /** 1-based line of the keyword. */
  line: number;
  /** Index of the stage this belongs to (-1 before the first FROM). */
  stage: number;
}

export interface Stage {
  index: number;
  name: string | undefined;
  /** The FROM argument, with ARG defaults substituted. */
  from: string;
  line: number;
  instructions: Instruction[];
}

export interface Dockerfile {
  instructions: Instruction[];
  stages: Stage[];
  /** ARGs declared before the first FROM, with their defaults. */
  globalArgs: Map<string, string | undefined>;
}

export interface Finding {
  rule: string;
  line: number;
  message: string;
}

const Keywords = new Set(['FROM', 'RUN', 'CMD', 'LABEL', 'MAINTAINER', 'EXPOSE', 'ENV', 'ADD', 'COPY', 'ENTRYPOINT', 'VOLUME', 'USER', 'WORKDIR', 'ARG', 'ONBUILD', 'STOPSIGNAL', 'HEALTHCHECK', 'SHELL']);

export function parseDockerfile(text: string): Dockerfile & { errors: Finding[] } {
  const lines = text.split('\n');
  const instructions: Instruction[] = [];
  const errors: Finding[] = [];
  const stages: Stage[] = [];
  const globalArgs = new Map<string, string | undefined>();
  let escape = '\\';
  let inHeader = true;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    if (inHeader) {
      const directive = /^#\s*([a-z]+)\s*=\s*(\S+)\s*$/i.exec(raw);
      if (directive) {
        if (directive[1]!.toLowerCase() === 'escape') escape = directive[2]!;
        continue;
      }
      inHeader = false;
    }
    if (/^\s*(#.*)?$/.test(raw)) continue;
    const start = i;
    let logical = raw;
    // Continuation lines; comment lines inside a continued instruction are dropped, as Docker does.
    while (logical.trimEnd().endsWith(escape) && i + 1 < lines.length) {
      logical = logical.trimEnd().slice(0, -escape.length);
      i++;
      while (i < lines.length && /^\s*#/.test(lines[i]!)) i++;
      if (i < lines.length) logical += ` ${lines[i]!.trim()}`;
    }
    const m = /^\s*([A-Za-z]+)(?:\s+(.*))?$/.exec(logical);
    if (!m) {
      errors.push({ rule: 'DF000', line: start + 1, message: `cannot parse ${JSON.stringify(raw.trim())}` });
      continue;
    }
    const keyword = m[1]!.toUpperCase();
    const args = (m[2] ?? '').trim();
    if (!Keywords.has(keyword)) errors.push({ rule: 'LB003', line: start + 1, message: `unknown instruction ${m[1]}` });
    const ins: Instruction = { keyword, args, line: start + 1, stage: stages.length - 1 };
    if (keyword === 'FROM') {
      const fm = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!fm) {
        errors.push({ rule: 'DF000', line: start + 1, message: `FROM ${args}: expected IMAGE [AS NAME]` });
        continue;
      }
      ins.stage = stages.length;
      stages.push({ index: stages.length, name: fm[2]?.toLowerCase(), from: substitute(fm[1]!, globalArgs), line: start + 1, instructions: [] });
    } else if (keyword === 'ARG' && stages.length === 0) {
      const am = /^([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$/.exec(args);
      if (am) globalArgs.set(am[1]!, am[2] === undefined ? undefined : unquote(am[2]));
    }
    instructions.push(ins);
    if (ins.stage >= 0) stages[ins.stage]!.instructions.push(ins);
  }
  return { instructions, stages, globalArgs, errors };
}

function unquote(s: string): string {
  const t = s.trim();
  return /^".*"$|^'.*'$/.test(t) ? t.slice(1, -1) : t;
}

function substitute(s: string, args: Map<string, string | undefined>): string {
  return s.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_, a: string | undefined, b: string | undefined) => args.get((a ?? b)!) ?? '');
}

/** Exec form (a JSON array) or shell form of CMD/ENTRYPOINT/RUN/HEALTHCHECK CMD. */
export function execForm(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  try {
    const v: unknown = JSON.parse(args);
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Flags (--from=x, --chown=y) and operands of COPY/ADD. */
export function copyOperands(args: string): { flags: Map<string, string>; sources: string[]; dest: string } {
  const flags = new Map<string, string>();
  const json = execForm(args);
  let words = json ?? args.split(/\s+/).filter((w) => w.length > 0);
  while (words[0]?.startsWith('--')) {
    const [k, v] = words[0].slice(2).split('=', 2);
    flags.set(k!, v ?? '');
    words = words.slice(1);
  }
  return { flags, sources: words.slice(0, -1), dest: words.at(-1) ?? '' };
}

/**
 * A .dockerignore matcher: patterns are relative to the context root, `**` spans directories, `*`
 * and `?` stay within one, `!` re-includes, the last matching pattern wins; a path is also excluded
 * when one of its parent directories is.
 */
export function dockerignore(text: string): (path: string) => boolean {
  const rules = text.split('\n').map((l) => l.trim()).filter((l) => l.length > 0 && !l.startsWith('#')).map((l) => {
    const negate = l.startsWith('!');
    const pat = (negate ? l.slice(1) : l).replace(/^\/+/, '').replace(/\/+$/, '');
    let re = '';
    for (let i = 0; i < pat.length; i++) {
      const c = pat[i]!;
      if (c === '*' && pat[i + 1] === '*') {
        // `**/` matches zero or more directories; a trailing `**` everything below.
        if (pat[i + 2] === '/') {
          re += '(?:.*/)?';
          i += 2;
        } else {
          re += '.*';
          i += 1;
        }
      } else if (c === '*') re += '[^/]*';
      else if (c === '?') re += '[^/]';
      else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
    return { negate, re: new RegExp(`^${re}$`) };
  });
  const matchOne = (p: string): boolean | undefined => {
    let excluded: boolean | undefined;
    for (const r of rules) if (r.re.test(p)) excluded = !r.negate;
    return excluded;
  };
  return (path: string) => {
    const parts = path.replace(/^\.\/+/, '').replace(/\/+$/, '').split('/');
    // Docker matches the path itself; a parent's exclusion counts when nothing re-includes the path.
    const own = matchOne(parts.join('/'));
    if (own !== undefined) return own;
    for (let n = parts.length - 1; n >= 1; n--) {
      const parent = matchOne(parts.slice(0, n).join('/'));
      if (parent !== undefined) return parent;
    }
    return false;
  };
}

export interface LintContext {
  /** The build context (the repository root); COPY sources are checked there. */
  contextDir?: string;
  /** Text of the .dockerignore that applies. */
  ignore?: string;
}

/** Stages that are build targets: no other stage builds FROM them or copies --from them. */
export function targetStages(df: Dockerfile): Stage[] {
  const used = new Set<string>();
  for (const s of df.stages) {
    if (df.stages.some((o) => o.name === s.from.toLowerCase())) used.add(s.from.toLowerCase());
    for (const ins of s.instructions) {
      if (ins.keyword !== 'COPY') continue;
      const from = copyOperands(ins.args).flags.get('from');
      if (from !== undefined) used.add(from.toLowerCase());
    }
  }
  return df.stages.filter((s) => s.name === undefined || !used.has(s.name));
}

/** The stages a stage is built on, itself first. */
export function stageChain(df: Dockerfile, stage: Stage): Stage[] {
  const chain: Stage[] = [stage];
  let cur = stage;
  for (;;) {
    const parent = df.stages.find((s) => s.name !== undefined && s.name === cur.from.toLowerCase() && s.index < cur.index);
    if (!parent || chain.includes(parent)) return chain;
    chain.push(parent);
    cur = parent;
  }
}

/** The last instruction of a keyword in effect for a stage (its own, else its parent stages'). */
export function effective(df: Dockerfile, stage: Stage, keyword: string): Instruction | undefined {
  for (const s of stageChain(df, stage)) {
    const found = s.instructions.filter((i) => i.keyword === keyword).at(-1);
    if (found) return found;
  }
  return undefined;
}

export function lintDockerfile(text: string, ctx: LintContext = {}): Finding[] {
  const df = parseDockerfile(text);
  const out: Finding[] = [...df.errors];
  const add = (rule: string, line: number, message: string) => out.push({ rule, line, message });
  const names = new Set<string>();
  const ignored = ctx.ignore === undefined ? () => false : dockerignore(ctx.ignore);

  for (const s of df.stages) {
    if (s.name !== undefined) {
      if (names.has(s.name)) add('LB004', s.line, `stage name ${s.name} used twice`);
      names.add(s.name);
    }
    const isStage = df.stages.some((o) => o.index < s.index && o.name === s.from.toLowerCase());
    if (!isStage && s.from !== 'scratch') {
      const image = s.from.split('@')[0]!;
      const tag = /:([^/:]+)$/.exec(image)?.[1];
      if (s.from === '' || image === '') add('DL3006', s.line, 'FROM names no image (an ARG without a default?)');
      else if (tag === undefined && !s.from.includes('@sha256:')) add('DL3006', s.line, `FROM ${s.from}: pin a tag`);
      else if (tag === 'latest') add('DL3007', s.line, `FROM ${s.from}: do not use latest`);
    }
    let cmds = 0;
    let entrypoints = 0;
    for (const ins of s.instructions) {
      switch (ins.keyword) {
        case 'CMD':
          if (++cmds === 2) add('DL4003', ins.line, 'more than one CMD in a stage: only the last counts');
          break;
        case 'ENTRYPOINT':
          if (++entrypoints === 2) add('DL4004', ins.line, 'more than one ENTRYPOINT in a stage: only the last counts');
          break;
        case 'MAINTAINER':
          add('DL4000', ins.line, 'MAINTAINER is deprecated (use a LABEL)');
          break;
        case 'WORKDIR':
          if (!ins.args.startsWith('/') && !ins.args.startsWith('$')) add('DL3000', ins.line, `WORKDIR ${ins.args} is not absolute`);
          break;
        case 'EXPOSE':
          for (const p of ins.args.split(/\s+/)) {
            const n = Number(p.split('/')[0]);
            if (!Number.isInteger(n) || n < 1 || n > 65535) add('DL3011', ins.line, `EXPOSE ${p}: not a port`);
          }
          break;
        case 'RUN':
          lintRun(ins, add);
          break;
        case 'ADD': {
          const { sources } = copyOperands(ins.args);
          if (sources.some((src) => !/^https?:\/\/|^git@/.test(src) && !/\.(tar|tgz|tar\.\w+)$/.test(src))) add('DL3020', ins.line, 'use COPY, not ADD, for files and folders');
          break;
        }
        case 'COPY': {
          const { flags, sources } = copyOperands(ins.args);
          const from = flags.get('from');
          if (from !== undefined) {
            const ref = df.stages.find((o) => o.name === from.toLowerCase() || String(o.index) === from);
            if (ref === undefined) {
              if (!/[:/]/.test(from)) add('DL3022', ins.line, `COPY --from=${from}: no earlier stage of that name`);
            } else if (ref.index >= s.index) add('DL3022', ins.line, `COPY --from=${from}: not an earlier stage`);
            break;
          }
          if (sources.length === 0) add('DF000', ins.line, 'COPY needs a source and a destination');
          if (ctx.contextDir === undefined) break;
          for (const src of sources) {
            if (/[*?[]/.test(src)) continue;
            const rel = src.replace(/^\.\/?/, '').replace(/\/$/, '');
            const full = join(ctx.contextDir, rel);
            if (!existsSync(full)) add('LB002', ins.line, `COPY ${src}: no such file in the build context`);
            else if (rel !== '' && ignored(rel) && !(statSync(full).isDirectory())) add('LB002', ins.line, `COPY ${src}: excluded by .dockerignore`);
            else if (rel !== '' && statSync(full).isDirectory() && ignored(`${rel}/x.ts`) && ignored(`${rel}/x.sql`) && ignored(`${rel}/x.json`)) add('LB002', ins.line, `COPY ${src}: its contents are excluded by .dockerignore`);
          }
          break;
        }
        default:
          break;
      }
    }
  }

  for (const t of targetStages(df)) {
    const label = t.name ?? `stage ${t.index}`;
    const user = effective(df, t, 'USER');
    if (user === undefined) add('DL3002', t.line, `target ${label} sets no USER: it would run as root`);
    else if (/^(root|0)(:.*)?$/.test(user.args.trim())) add('DL3002', user.line, `target ${label} runs as root`);
    if (effective(df, t, 'HEALTHCHECK') === undefined) add('LB001', t.line, `target ${label} has no HEALTHCHECK (say HEALTHCHECK NONE when it has no health surface)`);
  }
  return out.sort((a, b) => a.line - b.line);
}

function lintRun(ins: Instruction, add: (rule: string, line: number, message: string) => void): void {
  const cmd = execForm(ins.args)?.join(' ') ?? ins.args;
  // The separate commands of one RUN (&&, ;, ||).
  const parts = cmd.split(/&&|\|\||;/).map((p) => p.trim());
  if (parts.some((p) => /^sudo\b/.test(p))) add('DL3004', ins.line, 'do not use sudo: RUN runs as root until USER');
  if (parts.some((p) => /^apt-get\s+(.*\s)?(upgrade|dist-upgrade)\b/.test(p))) add('DL3005', ins.line, 'do not apt-get upgrade in an image: pin the base image instead');
  if (parts.some((p) => /^cd\s/.test(p))) add('DL3003', ins.line, 'use WORKDIR to change directory');
  if (parts.some((p) => /^npm\s+(install|i)(\s|$)/.test(p))) add('LB005', ins.line, 'npm install: use npm ci so the lockfile is what gets installed');
  const installs = parts.map((p, i) => ({ p, i })).filter(({ p }) => /^apt-get\s+(.*\s)?install\b/.test(p));
  for (const { p, i } of installs) {
    if (!/(^|\s)(-y|--yes|-qq?y|--assume-yes)(\s|$)/.test(p)) add('DL3014', ins.line, 'apt-get install without -y');
    if (!/--no-install-recommends/.test(p)) add('DL3015', ins.line, 'apt-get install without --no-install-recommends');
    if (!parts.slice(0, i).some((q) => /^apt-get\s+(.*\s)?update\b/.test(q))) add('DL3009', ins.line, 'apt-get install without apt-get update before it in the same RUN (a cached layer would install from stale lists)');
    if (!parts.slice(i + 1).some((q) => /^rm\s+-(rf|fr|r)\s+\/var\/lib\/apt\/lists/.test(q))) add('DL3009', ins.line, 'apt-get install without rm -rf /var/lib/apt/lists/* after it in the same RUN');
  }
}
