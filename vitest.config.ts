// Node unit and property tests. The browser suites (e2e/, Playwright) and the
// QEMU boot tests (e2e/linux/, their own config) are not run from here.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
    testTimeout: 60_000,
  },
});
