/**
 * How bin/lifeboat-agent.js and bin/lifeboat-service.js start their command: the bundle `npm run
 * build` wrote to dist/ when it is there and current, else the TypeScript sources through tsx's
 * loader (right after `npm ci`, and while sources are edited). Plain JavaScript, as it runs before
 * any loader; here rather than in bin/ because the service image and the agent's .deb copy shared/
 * and only their own bin file.
 *
 * Current means: every source file dist/build.json lists for the command (what the bundle was made
 * of, with package.json and the lock file) has the size and modification time, to the second, it had
 * at the build. Checking costs one stat per source, a few milliseconds. When a source changed the
 * command runs from the sources, saying so in one line when stderr is a terminal (a script's stderr
 * is left as the command writes it).
 *
 * LIFEBOAT_BUNDLE=0 always runs the sources; LIFEBOAT_BUNDLE=1 runs the bundle or fails saying why.
 */
import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Runs the command: name is its bundle's name in dist/, source its main module (a URL).
 * @param {string} name
 * @param {URL} source
 */
export async function launch(name, source) {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const mode = process.env.LIFEBOAT_BUNDLE;
  if (mode !== '0') {
    const why = staleness(root, name);
    if (why === undefined) {
      await import(new URL(`../../dist/${name}.js`, import.meta.url).href);
      return;
    }
    if (mode === '1') {
      process.stderr.write(`${name}: LIFEBOAT_BUNDLE=1 but ${why}\n`);
      process.exit(1);
    }
    if (process.stderr.isTTY && !why.startsWith('there is no')) process.stderr.write(`${name}: ${why}; running the sources through tsx (npm run build makes it current)\n`);
  }
  const { register } = await import('tsx/esm/api');
  register();
  await import(source.href);
}

/**
 * Why dist/ cannot run the command, or undefined when it can.
 * @param {string} root the repository's directory, ending in /
 * @param {string} name
 * @returns {string | undefined}
 */
function staleness(root, name) {
  let sources;
  try {
    sources = JSON.parse(readFileSync(`${root}dist/build.json`, 'utf8')).commands?.[name];
  } catch {
    return 'there is no build in dist/';
  }
  if (!sources || !statSync(`${root}dist/${name}.js`, { throwIfNoEntry: false })) return `there is no ${name} in dist/`;
  // Paths as strings: a URL per file would cost more than its stat.
  for (const [path, [seconds, size]] of Object.entries(sources)) {
    const s = statSync(root + path, { throwIfNoEntry: false });
    if (!s) return `${path} is gone since the build in dist/`;
    if (Math.trunc(s.mtimeMs / 1000) !== seconds || (size !== -1 && s.size !== size)) return `${path} changed since the build in dist/`;
  }
  return undefined;
}
