// Crash trials in Chromium (e2e/harness/crash-runner.ts): SIGKILL the
// browser's process group at a random moment of a random write/FLUSH
// workload, of a series of disk creations, of a workload that resizes the
// disk (Disk.resize) or closes and reopens it (Disk.close), relaunch on the
// same profile, and check every sector against the model of what was
// flushed. A few per backend and mode here (15 trials, OPFS and IndexedDB
// in every mode, the overlay over both tops; 2.0 minutes on a 2-core
// machine at load average 27, most of it the eleven browser launches); `npm run crash-trials -- --runs N` runs many
// (docs/crash-trials.md).

import type { CrashBackend } from './harness/crash-model.ts';
import { runCrashTrials, type CrashMode } from './harness/crash-runner.ts';
// Each trial launches its own persistent profile, so the fixture's profile is not needed.
import { expect, test } from '@playwright/test';

/** Trials per backend and mode (an overlay cannot resize). */
const RUNS: Record<CrashBackend, Partial<Record<CrashMode, number>>> = {
  opfs: { workload: 2, create: 1, resize: 2, close: 1 },
  indexeddb: { workload: 2, create: 1, resize: 2, close: 1 },
  'overlay-opfs': { workload: 1, close: 1 },
  'overlay-indexeddb': { workload: 1 },
};
const DURING = {
  workload: 'a write/FLUSH workload',
  create: 'disk creation',
  resize: 'a workload that grows and shrinks the disk',
  close: 'a workload that closes and reopens the disk',
} as const;

for (const [backend, modes] of Object.entries(RUNS) as Array<[CrashBackend, Partial<Record<CrashMode, number>>]>) {
  for (const [mode, runs] of Object.entries(modes) as Array<[CrashMode, number]>) {
    test(`${backend}: ${runs} crash trials during ${DURING[mode]} lose and tear nothing`, async ({ baseURL }, testInfo) => {
      testInfo.setTimeout(180_000);
      // A seed per run, printed, so that a failure can be replayed with the script.
      const seed = Math.floor(Math.random() * 100000);
      console.log(`crash trials ${backend} ${mode}: seed ${seed}`);
      const summary = await runCrashTrials({ backend, mode, runs, seed, baseURL: baseURL! });
      expect(summary.problems).toEqual([]);
      expect(summary.trials).toBe(runs);
      if (mode !== 'create') {
        expect(summary.sectorsChecked).toBeGreaterThan(0);
        expect(summary.flushesBeforeKill).toBeGreaterThan(0);
        expect([summary.lostSectors, summary.tornSectors]).toEqual([0, 0]);
      }
    });
  }
}
