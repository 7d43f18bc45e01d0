// Test fixture for state.test.ts: rewrites one file atomically forever, alternating two contents,
// printing a line after each completed write, until it is killed.
import { writeFileAtomic } from './atomic.js';

const [path, size] = [process.argv[2]!, Number(process.argv[3])];
const contents = [Buffer.alloc(size, 'a'), Buffer.alloc(size, 'b')];
for (let i = 0; ; i++) {
  await writeFileAtomic(path, contents[i % 2]!);
  process.stdout.write(`${i}\n`);
}
