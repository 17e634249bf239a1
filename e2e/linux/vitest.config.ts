// The Linux boot tests (npm run test:linux): QEMU aarch64 boots with the disk
// served by this project over vhost-user. Slow (TCG), so they run one file at
// a time with generous timeouts, apart from the unit tests.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['e2e/linux/**/*.e2e.ts'],
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 600_000,
    reporters: ['default'],
  },
});
