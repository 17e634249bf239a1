// Playwright runs the Chromium end-to-end tests in e2e/ (not e2e/linux/, the
// QEMU tests with their own runner). Every test gets a persistent on-disk
// profile from e2e/fixtures.ts: OPFS in a private profile is 100–200× slower
// and its flush() does nothing (DESIGN.md), so storage tests there would prove
// nothing.
//
// The web server is Vite on a fixed port: `vite` (dev) by default, which also
// serves the harness pages under e2e/harness/; E2E_SERVER=preview builds first
// (harness pages included) and serves the build, to check what ships.

import { defineConfig } from '@playwright/test';
import { chromiumArgs, chromiumExecutable } from './e2e/chromium.ts';

const port = Number(process.env.E2E_PORT ?? 5183);
const preview = process.env.E2E_SERVER === 'preview';
const vite = 'node node_modules/vite/bin/vite.js';

export default defineConfig({
  testDir: 'e2e',
  testIgnore: ['linux/**', 'harness/**'],
  // Each test launches its own browser with its own profile; two at a time
  // fit a 2-core machine.
  workers: 2,
  // Tests share nothing (each has its own profile), so files need not run whole.
  fullyParallel: true,
  timeout: 120_000,
  expect: { timeout: 30_000 },
  forbidOnly: !!process.env.CI,
  reporter: process.env.CI ? 'list' : [['list'], ['html', { open: 'never' }]],
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    headless: true,
    launchOptions: { executablePath: chromiumExecutable(), args: chromiumArgs() },
    trace: 'retain-on-failure',
  },
  webServer: {
    command: preview
      ? `E2E_BUILD_HARNESS=1 ${vite} build && ${vite} preview --port ${port}`
      : `${vite} --port ${port}`,
    url: `http://127.0.0.1:${port}/`,
    env: { E2E_NO_HMR: '1' },
    reuseExistingServer: !process.env.CI,
    timeout: 180_000,
  },
});
