import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['{agent,service,shared,test}/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Redis and PostgreSQL where they answer, else private ones for the run (test/global-setup.ts).
    globalSetup: ['test/global-setup.ts'],
    // Two cores: files run in parallel forks; a file that needs a quiet machine says so itself.
    pool: 'forks',
    reporters: process.env.CI ? ['default'] : ['default'],
  },
});
