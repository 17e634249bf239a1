// Crash trials in Chromium (e2e/harness/crash-runner.ts): SIGKILL the
// browser's process group at a random moment of a random write/FLUSH
// workload, or of a series of disk creations, relaunch on the same profile,
// and check every sector against the model of what was flushed. A few per
// backend here; `npm run crash-trials -- --runs N` runs many.

import { runCrashTrials } from './harness/crash-runner.ts';
// Each trial launches its own persistent profile, so the fixture's profile is not needed.
import { expect, test } from '@playwright/test';

const RUNS = { workload: 6, create: 4 } as const;

for (const backend of ['opfs', 'indexeddb'] as const) {
  for (const mode of ['workload', 'create'] as const) {
    test(`${backend}: ${RUNS[mode]} crash trials during ${mode === 'workload' ? 'a write/FLUSH workload' : 'disk creation'} lose and tear nothing`, async ({ baseURL }, testInfo) => {
      testInfo.setTimeout(180_000);
      // A seed per run, printed, so that a failure can be replayed with the script.
      const seed = Math.floor(Math.random() * 100000);
      console.log(`crash trials ${backend} ${mode}: seed ${seed}`);
      const summary = await runCrashTrials({ backend, mode, runs: RUNS[mode], seed, baseURL: baseURL! });
      expect(summary.problems).toEqual([]);
      expect(summary.trials).toBe(RUNS[mode]);
      if (mode === 'workload') {
        expect(summary.sectorsChecked).toBeGreaterThan(0);
        expect(summary.flushesBeforeKill).toBeGreaterThan(0);
        expect([summary.lostSectors, summary.tornSectors]).toEqual([0, 0]);
      }
    });
  }
}
