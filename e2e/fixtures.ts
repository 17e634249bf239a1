// The Playwright fixture every e2e test uses: a persistent, on-disk Chromium
// profile in a fresh temporary directory, per test.
//
// Why persistent: in a private profile (`browser.newContext()`) OPFS is
// 100–200× slower and flush() does nothing (DESIGN.md). Why fresh: tests must
// not see each other's disks or locks.
//
// `context` and `page` are overridden, so a test written against the usual
// fixtures gets the persistent profile. `profile` adds what storage tests
// need: a second page in the same profile (another tab, sharing OPFS and Web
// Locks), and `relaunch()`, which closes the whole browser and starts it again
// on the same directory — a harder stop than a reload, for durability tests.

import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test as base, chromium, type BrowserContext, type Page } from '@playwright/test';

export interface Profile {
  /** The profile directory on disk. */
  readonly dir: string;
  /** The current browser context (replaced by `relaunch`). */
  readonly context: BrowserContext;
  /** Open another tab in the same profile, at `path` when given. */
  newPage(path?: string): Promise<Page>;
  /** Close the browser and launch it again on the same profile; returns its first page. */
  relaunch(): Promise<Page>;
  /**
   * Kill the browser with SIGKILL (no shutdown, no flushing of its own),
   * then launch it again on the same profile; returns its first page.
   */
  crashAndRelaunch(): Promise<Page>;
}

interface Fixtures {
  profile: Profile;
}

export const test = base.extend<Fixtures>({
  profile: async ({ launchOptions, headless, baseURL }, use) => {
    const dir = await mkdtemp(join(tmpdir(), 'virtio-blk-web-profile-'));
    const launch = () => chromium.launchPersistentContext(dir, { ...launchOptions, headless, baseURL });
    let context = await launch();
    const watch = (page: Page): Page => {
      // Errors thrown in the page or its workers fail loudly in the test log.
      page.on('pageerror', (err) => console.error(`[page error] ${err.stack ?? err.message}`));
      if (process.env.E2E_CONSOLE) page.on('console', (msg) => console.log(`[console.${msg.type()}] ${msg.text()}`));
      return page;
    };
    context.on('page', watch);
    for (const page of context.pages()) watch(page);
    const relaunched = async (): Promise<Page> => {
      context = await launch();
      context.on('page', watch);
      return watch(context.pages()[0] ?? (await context.newPage()));
    };
    const profile: Profile = {
      dir,
      get context() {
        return context;
      },
      async newPage(path) {
        const page = await context.newPage();
        if (path !== undefined) await page.goto(path);
        return page;
      },
      async relaunch() {
        await context.close();
        return relaunched();
      },
      async crashAndRelaunch() {
        // The processes this test's browser runs are the ones whose command
        // line names this test's own, freshly made profile directory.
        const pids = browserPids(dir);
        if (pids.length === 0) throw new Error(`no browser process found for profile ${dir}`);
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // Already gone.
          }
        }
        await context.close().catch(() => undefined);
        return relaunched();
      },
    };
    await use(profile);
    await context.close();
    await rm(dir, { recursive: true, force: true });
  },
  context: async ({ profile }, use) => {
    await use(profile.context);
  },
  page: async ({ profile }, use) => {
    await use(profile.context.pages()[0] ?? (await profile.context.newPage()));
  },
});

/** Ids of the processes whose command line names `profileDir` (Linux and macOS `ps`). */
function browserPids(profileDir: string): number[] {
  const out = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter((line) => line.includes(`--user-data-dir=${profileDir}`))
    .map((line) => Number.parseInt(line.trim(), 10))
    .filter((pid) => Number.isInteger(pid) && pid !== process.pid);
}

export { expect } from '@playwright/test';
