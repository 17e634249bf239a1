// Which Chromium the e2e tests run, and with which flags. Shared by
// playwright.config.ts (launchOptions) and the persistent-profile fixture.
//
// Playwright's own browser download does not work on this project's machines
// (DESIGN.md), so Debian's `chromium` is used through `executablePath`:
// $CHROMIUM_PATH first, then `chromium` on PATH. Elsewhere (a developer's
// laptop with `npx playwright install chromium`) the executable stays unset and
// Playwright uses its own build.

import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** The Chromium executable to launch, or undefined for Playwright's own. */
export function chromiumExecutable(): string | undefined {
  const fromEnv = process.env.CHROMIUM_PATH;
  if (fromEnv) return fromEnv;
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    for (const name of ['chromium', 'chromium-browser']) {
      const candidate = join(dir, name);
      if (dir && existsSync(candidate)) return candidate;
    }
  }
  return undefined;
}

/** Flags for headless test runs. */
export function chromiumArgs(): string[] {
  const args = [
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ];
  // Chromium refuses to start as root with its sandbox on (DESIGN.md).
  if (process.getuid?.() === 0) args.unshift('--no-sandbox');
  return args;
}
