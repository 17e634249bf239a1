// The consumer test (npm run test:consumer; part of npm test): the packed
// tarball installed into scratch projects outside the repository. One file,
// run in order; npm installs and builds make it slow (a minute or two).
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['test/consumer/**/*.e2e.ts'],
    fileParallelism: false,
    sequence: { concurrent: false },
    testTimeout: 120_000,
    hookTimeout: 300_000,
  },
});
