/**
 * npm run bench -- startup: how long a command takes to answer, the way a hoster's script runs it
 * (a new process each time): `lifeboat-agent --help`, `lifeboat-agent status` on an empty state
 * directory and `lifeboat-service --help`, from the bundle (`npm run build`, run first here) and
 * through tsx (LIFEBOAT_BUNDLE=0), beside `node -e 0` in the same rounds. Goal: the bundle within
 * 0.2 s of bare node.
 *
 * Each round runs node and every command once, one after the other, so load from colleagues falls on
 * all alike; rows give the median over the rounds of wall time (what a script waits for) and of CPU
 * time (user + system, from /usr/bin/time: less swayed by load), and the median per-round difference
 * from node.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { runCommand, runTimed, type Benchmark, type BenchRow } from './lib.js';

const root = resolve(import.meta.dirname, '..');
const GoalSeconds = 0.2;

interface Sample { wall: number; cpu: number }

/** One run of node with args: wall seconds from here, CPU seconds from /usr/bin/time. */
function sample(args: string[], env: NodeJS.ProcessEnv): Promise<Sample> {
  return runTimed(process.execPath, args, { ...process.env, ...env });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const ms = (s: number) => `${(s * 1000).toFixed(0)} ms`;

export const startupBench: Benchmark = {
  name: 'startup',
  description: 'command start: agent --help, agent status, service --help from the bundle and through tsx, beside node -e 0',
  async run(ctx) {
    await runCommand(process.execPath, [join(root, 'scripts', 'build.mjs')], { cwd: root });
    const state = await mkdtemp(join(tmpdir(), 'lifeboat-bench-startup-'));
    try {
      const agent = join(root, 'bin', 'lifeboat-agent.js');
      const service = join(root, 'bin', 'lifeboat-service.js');
      const commands: { name: string; args: string[] }[] = [
        { name: 'lifeboat-agent --help', args: [agent, '--help'] },
        { name: 'lifeboat-agent status', args: [agent, 'status', '--state-dir', state] },
        { name: 'lifeboat-service --help', args: [service, '--help'] },
      ];
      const modes = [{ mode: 'bundle', env: { LIFEBOAT_BUNDLE: '1' } }, { mode: 'tsx', env: { LIFEBOAT_BUNDLE: '0' } }];
      const cases = modes.flatMap((m) => commands.map((c) => ({ ...c, ...m, samples: [] as Sample[] })));
      const node: Sample[] = [];
      const rounds = ctx.quick ? 5 : 15;
      // One warm-up round (file cache, tsx's compile cache), not counted.
      for (let round = -1; round < rounds; round++) {
        const n = await sample(['-e', '0'], {});
        if (round >= 0) node.push(n);
        for (const c of cases) {
          const s = await sample(c.args, c.env);
          if (round >= 0) c.samples.push(s);
        }
      }
      const nodeWall = median(node.map((s) => s.wall));
      const nodeCpu = median(node.map((s) => s.cpu));
      return cases.map((c): BenchRow => {
        const wall = median(c.samples.map((s) => s.wall));
        const above = median(c.samples.map((s, i) => s.wall - node[i]!.wall));
        const cpu = median(c.samples.map((s) => s.cpu));
        return {
          name: `startup ${c.name} (${c.mode})`,
          ours: `${ms(wall)} cpu ${ms(cpu)}`,
          peer: `node ${ms(nodeWall)} cpu ${ms(nodeCpu)}`,
          ratio: `+${ms(above)} ${(wall / nodeWall).toFixed(1)}x`,
          goal: c.mode === 'bundle' ? `<= +${ms(GoalSeconds)} over node (median of ${rounds})` : `none: the fallback (median of ${rounds})`,
          ok: c.mode === 'bundle' ? above <= GoalSeconds : undefined,
        };
      });
    } finally {
      await rm(state, { recursive: true, force: true });
    }
  },
};
