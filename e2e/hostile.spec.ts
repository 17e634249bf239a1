// The hostile-guest suite (test/hostile/) through createDisk's worker host in
// Chromium: the device in a module worker, guest RAM a SharedArrayBuffer on a
// cross-origin isolated page that plays the guest with raw register writes
// and raw rings. Each test is one case, named after the rule it enforces; it
// passes on PASS or REJECT and fails on WEDGED or FAIL with what the device
// did. One persistent on-disk profile per Playwright worker (the cases touch
// no browser storage; a browser per case would cost more than the cases).

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test as base, chromium, expect, type BrowserContext } from '@playwright/test';
import { hostileCases } from '../test/hostile/cases.ts';
import type { CaseResult } from '../test/hostile/runner.ts';

const test = base.extend<object, { hostileContext: BrowserContext }>({
  hostileContext: [
    async ({ launchOptions, headless }, use, workerInfo) => {
      const dir = await mkdtemp(join(tmpdir(), 'virtio-blk-web-hostile-'));
      const context = await chromium.launchPersistentContext(dir, {
        ...launchOptions,
        headless,
        baseURL: workerInfo.project.use.baseURL,
      });
      await use(context);
      await context.close();
      await rm(dir, { recursive: true, force: true });
    },
    { scope: 'worker' },
  ],
});

test.describe('hostile guest, worker host', () => {
  for (const c of hostileCases.filter((x) => !x.sameThreadOnly)) {
    test(c.name, async ({ hostileContext }) => {
      const page = await hostileContext.newPage();
      page.on('pageerror', (err) => console.error(`[page error] ${err.stack ?? err.message}`));
      try {
        await page.goto('/e2e/harness/hostile.html');
        await page.waitForFunction(() => document.body.dataset.ready === 'true');
        expect(await page.evaluate(() => window.hostile!.isolated)).toBe(true);
        const result: CaseResult = await page.evaluate((name) => window.hostile!.run(name), c.name);
        expect(result.kind === 'PASS' || result.kind === 'REJECT', `${result.kind}: ${result.detail}`).toBe(true);
      } finally {
        await page.close();
      }
    });
  }
});
