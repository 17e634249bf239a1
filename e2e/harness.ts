// Test-side helpers for the harness pages under e2e/harness/.

import type { Page } from '@playwright/test';
import type { WireError } from './harness/rpc.ts';

export interface Harness {
  readonly page: Page;
  /** Run a harness op in the page's worker; rejects on a worker error. */
  call<T = unknown>(op: string, args?: unknown): Promise<T>;
  /** Run a harness op; resolves with its error, or null when it succeeded. */
  attempt(op: string, args?: unknown): Promise<WireError | null>;
}

/** Open harness page `name` (e2e/harness/NAME.html) and wait until its worker is up. */
export async function openHarness(page: Page, name: string, query = ''): Promise<Harness> {
  await page.goto(`/e2e/harness/${name}.html${query}`);
  await page.waitForFunction(() => document.body.dataset.ready === 'true');
  return {
    page,
    call: <T>(op: string, args?: unknown) =>
      page.evaluate(([o, a]) => window.harness!.call(o, a), [op, args] as const) as Promise<T>,
    attempt: (op: string, args?: unknown) => page.evaluate(([o, a]) => window.harness!.attempt(o, a), [op, args] as const),
  };
}
