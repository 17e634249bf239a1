// Crash trials in Chromium (e2e/harness/crash-runner.ts): SIGKILL the
// browser's process group at a random moment of a random write/FLUSH
// workload, of a series of disk creations, of a workload that resizes the
// disk (Disk.resize) or closes and reopens it (Disk.close), relaunch on the
// same profile, and check every sector against the model of what was
// flushed. A few per backend and mode here (20 trials, about a minute or
// so); `npm run crash-trials -- --runs N` runs many (docs/crash-trials.md).

import { runCrashTrials } from './harness/crash-runner.ts';
// Each trial launches its own persistent profile, so the fixture's profile is not needed.
import { expect, test } from '@playwright/test';

const RUNS = { workload: 4, create: 2, resize: 2, close: 2 } as const;
const DURING = {
  workload: 'a write/FLUSH workload',
  create: 'disk creation',
  resize: 'a workload that grows and shrinks the disk',
  close: 'a workload that closes and reopens the disk',
} as const;

for (const backend of ['opfs', 'indexeddb'] as const) {
  for (const mode of ['workload', 'create', 'resize', 'close'] as const) {
    test(`${backend}: ${RUNS[mode]} crash trials during ${DURING[mode]} lose and tear nothing`, async ({ baseURL }, testInfo) => {
      testInfo.setTimeout(180_000);
      // A seed per run, printed, so that a failure can be replayed with the script.
      const seed = Math.floor(Math.random() * 100000);
      console.log(`crash trials ${backend} ${mode}: seed ${seed}`);
      const summary = await runCrashTrials({ backend, mode, runs: RUNS[mode], seed, baseURL: baseURL! });
      expect(summary.problems).toEqual([]);
      expect(summary.trials).toBe(RUNS[mode]);
      if (mode !== 'create') {
        expect(summary.sectorsChecked).toBeGreaterThan(0);
        expect(summary.flushesBeforeKill).toBeGreaterThan(0);
        expect([summary.lostSectors, summary.tornSectors]).toEqual([0, 0]);
      }
    });
  }
}
