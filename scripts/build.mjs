#!/usr/bin/env node
/**
 * npm run build: the CLIs as plain JavaScript in dist/, so a command starts without compiling
 * TypeScript (bin/ runs dist/ when it is there and current, else the sources through tsx;
 * docs/operations.md "Start time").
 *
 * - One ES module bundle per command (dist/lifeboat-agent.js, dist/lifeboat-service.js) and one for
 *   the agent's sealing threads (dist/seal-worker.js, which seal-pool.ts starts when it runs as .js),
 *   split into shared chunks: what a command imports lazily stays a separate file loaded when used.
 * - Packages stay in node_modules (native addons, files they read beside themselves), except the
 *   few every start needs (Inlined): bundling them saves resolving and reading their dozens of files.
 * - Files our modules read beside themselves at run time (Beside) are copied under dist/src/ with
 *   their directory layout, and those modules' import.meta.url points there.
 * - dist/build.json (the stamp) lists per command every source file it was built from, with its
 *   size and modification time (whole seconds: what tar and image layers keep); bin/ compares them
 *   before using the bundle (shared/cli/launch.js).
 * The outputs are written each through a rename, chunks before the entries that import them and the
 * stamp last, so a command starting meanwhile runs the old build or the new one. Chunks of the
 * previous build stay (a daemon started from it may still import one); older ones go. Nothing else
 * in dist/ is touched.
 *
 * A tree with only some commands' sources (the service image has no agent/) builds those.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const stampPath = join(dist, 'build.json');

/** Each command: its entry modules (output name → source); the first is what bin/ runs. */
const Commands = {
  'lifeboat-agent': { 'lifeboat-agent': 'agent/cli/main.ts', 'seal-worker': 'agent/replicate/seal-worker.ts' },
  'lifeboat-service': { 'lifeboat-service': 'service/cli/main.ts' },
};
/** Pure-JavaScript packages on every command's start path, bundled in. */
const Inlined = new Set(['commander', 'zod']);
/** Modules that read files beside themselves through import.meta.url, and which files (relative to the module). */
const Beside = {
  'service/catalog/migrate.ts': (dir) => readdirSync(join(dir, 'migrations')).filter((f) => f.endsWith('.sql')).map((f) => `migrations/${f}`),
  'service/guest/recipe.ts': (dir) => readdirSync(dir).filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts')),
};
/** Modules whose import.meta.url is meant to be the bundle's: they look for files of the build (seal-pool: seal-worker.js). */
const BundleAware = new Set(['agent/replicate/seal-pool.ts']);
/** Besides the sources: a different lock file means different packages (Inlined ones are in the bundle). */
const AlsoStamped = ['package.json', 'package-lock.json', relative(root, fileURLToPath(import.meta.url))];

const commands = Object.entries(Commands).filter(([, entries]) => Object.values(entries).every((src) => existsSync(join(root, src))));
if (commands.length === 0) fail('no command sources found (agent/cli/main.ts, service/cli/main.ts)');
const entryPoints = Object.fromEntries(commands.flatMap(([, entries]) => Object.entries(entries)));

const result = await build({
  absWorkingDir: root,
  entryPoints,
  outdir: dist,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  write: false,
  metafile: true,
  logLevel: 'warning',
  legalComments: 'none',
  // CommonJS packages bundled in (commander) call require() for Node's modules.
  banner: { js: "import { createRequire as __lifeboatRequire } from 'node:module'; const require = __lifeboatRequire(import.meta.url);" },
  plugins: [packagesOutside(), besideFiles(), zodEnglishOnly()],
});

const ours = (input) => !input.startsWith('node_modules/') && !input.includes(':') && !input.startsWith('(disabled)');
checkImportMeta(Object.keys(result.metafile.inputs).filter(ours));

// Chunks first, then entries: an entry is only ever next to the chunks it imports.
const entryOutputs = new Set(Object.keys(entryPoints).map((name) => `${name}.js`));
const files = result.outputFiles.map((f) => ({ name: relative(dist, f.path), contents: f.contents }));
files.sort((a, b) => Number(entryOutputs.has(a.name)) - Number(entryOutputs.has(b.name)));
mkdirSync(dist, { recursive: true });
const besideCopies = copyBeside();
for (const f of files) writeAtomically(join(dist, f.name), f.contents);

const previous = readStamp();
const stamp = { version: 1, builtAt: new Date().toISOString(), commands: {}, outputs: [...files.map((f) => f.name), ...besideCopies].sort() };
for (const [command, entries] of commands) {
  const sources = new Set(AlsoStamped.filter((p) => existsSync(join(root, p))));
  for (const input of inputsOf(Object.keys(entries).map((name) => `dist/${name}.js`))) {
    if (!ours(input)) continue;
    sources.add(input);
    const beside = Beside[input];
    if (beside) {
      const dir = dirname(join(root, input));
      for (const f of beside(dir)) sources.add(relative(root, join(dir, f)));
      if (input === 'service/catalog/migrate.ts') sources.add(relative(root, join(dir, 'migrations'))); // a migration added or removed
    }
  }
  stamp.commands[command] = Object.fromEntries([...sources].sort().map((p) => [p, fileStamp(join(root, p))]));
}
// What the build before last wrote and neither the last nor this one did.
if (previous) {
  const keep = new Set([...stamp.outputs, ...(previous.outputs ?? [])]);
  for (const name of previous.previousOutputs ?? []) if (!keep.has(name)) rmSync(join(dist, name), { force: true });
  stamp.previousOutputs = previous.outputs ?? [];
}
writeAtomically(stampPath, `${JSON.stringify(stamp)}\n`);

const sizes = commands.map(([command]) => `${command} (${Object.keys(stamp.commands[command]).length} sources)`).join(', ');
process.stderr.write(`build: dist/ has ${sizes}, ${files.length} files\n`);

/** Every package is imported from node_modules at run time, except the Inlined ones. */
function packagesOutside() {
  return {
    name: 'packages-outside',
    setup(b) {
      b.onResolve({ filter: /^[^./]/ }, (args) => {
        if (args.path.startsWith('node:')) return { external: true };
        const parts = args.path.split('/');
        const pkg = args.path.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
        return Inlined.has(pkg) ? undefined : { external: true };
      });
    },
  };
}

function zodEnglishOnly() {
  return {
    name: 'zod-english-only',
    setup(b) {
      b.onResolve({ filter: /\/locales\/index\.js$/ }, (args) => args.importer.includes('/node_modules/zod/') ? { path: join(dirname(args.importer), args.path.replace('index.js', 'en.js')).replace(/\.js$/, '.js'), namespace: 'zod-locales' } : undefined);
      b.onLoad({ filter: /.*/, namespace: 'zod-locales' }, (args) => ({ contents: `export { default as en } from ${JSON.stringify(args.path)};`, resolveDir: dirname(args.path) }));
    },
  };
}

/** A Beside module's import.meta.url becomes its copy's place under dist/src/ (relative to the chunk it lands in, which is in dist/). */
function besideFiles() {
  return {
    name: 'beside-files',
    setup(b) {
      b.onLoad({ filter: /\.ts$/ }, (args) => {
        const rel = relative(root, args.path);
        if (!Beside[rel]) return undefined;
        const text = readFileSync(args.path, 'utf8').replaceAll('import.meta.url', `new URL(${JSON.stringify(`./src/${rel}`)}, import.meta.url).href`);
        return { contents: text, loader: 'ts' };
      });
    },
  };
}

/** Copies the Beside files of the modules being built; returns their names under dist/. */
function copyBeside() {
  const names = [];
  for (const [module, list] of Object.entries(Beside)) {
    if (!existsSync(join(root, module))) continue;
    const dir = dirname(join(root, module));
    for (const f of list(dir)) {
      const name = join('src', relative(root, join(dir, f)));
      mkdirSync(dirname(join(dist, name)), { recursive: true });
      writeAtomically(join(dist, name), readFileSync(join(dir, f)));
      names.push(name);
    }
  }
  // A file gone from the sources goes from dist/src/ too: a migration left there by a newer build
  // would otherwise be applied by an older one, which then refuses its own catalog.
  const kept = new Set(names);
  for (const d of new Set(names.map((n) => dirname(n)))) {
    for (const f of readdirSync(join(dist, d))) {
      const name = join(d, f);
      if (!kept.has(name) && statSync(join(dist, name)).isFile()) rmSync(join(dist, name));
    }
  }
  return names;
}

/**
 * A module of ours that resolves files through import.meta (other than a package through
 * createRequire, which works from dist/ as from the sources) must be named in Beside or BundleAware,
 * or its bundled copy would look for them in dist/.
 */
function checkImportMeta(inputs) {
  const unknown = inputs.filter((input) => !Beside[input] && !BundleAware.has(input)
    && /import\.meta\.(url|dirname|filename|resolve)/.test(readFileSync(join(root, input), 'utf8').replaceAll('createRequire(import.meta.url)', '')));
  if (unknown.length > 0) fail(`${unknown.join(', ')} resolve(s) files through import.meta: name them in Beside or BundleAware in scripts/build.mjs`);
}

/** The source files (metafile inputs) of the given outputs and every chunk they import, statically or not. */
function inputsOf(outputs) {
  const seen = new Set();
  const inputs = new Set();
  const queue = [...outputs];
  while (queue.length > 0) {
    const out = queue.pop();
    if (seen.has(out)) continue;
    seen.add(out);
    const o = result.metafile.outputs[out];
    if (!o) fail(`esbuild wrote no ${out}`);
    for (const input of Object.keys(o.inputs)) inputs.add(input);
    for (const i of o.imports) if (!i.external) queue.push(i.path);
  }
  return inputs;
}

function fileStamp(path) {
  const s = statSync(path);
  return [Math.trunc(s.mtimeMs / 1000), s.isDirectory() ? -1 : s.size];
}

function readStamp() {
  try {
    return JSON.parse(readFileSync(stampPath, 'utf8'));
  } catch {
    return undefined;
  }
}

function writeAtomically(path, contents) {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, contents);
  renameSync(tmp, path);
}

function fail(message) {
  process.stderr.write(`build: ${message}\n`);
  process.exit(1);
}
