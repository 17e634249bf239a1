// Crash trials in Chromium (e2e/harness/crash-runner.ts): SIGKILL the
// browser's process group at a random moment of a random write/FLUSH
// workload, of a series of disk creations, of a workload that resizes the
// disk (Disk.resize) or closes and reopens it (Disk.close), relaunch on the
// same profile, and check every sector against the model of what was
// flushed. A few per backend and mode here (23 trials, OPFS and IndexedDB
// in every mode, the overlay over both tops), one runner session per
// backend (45 s on 2 cores at load average 8–14); `npm run crash-trials -- --runs N` runs many
// (docs/crash-trials.md).

import type { CrashBackend } from './harness/crash-model.ts';
import { runCrashTrials, type CrashMode } from './harness/crash-runner.ts';
// Each trial launches its own persistent profile, so the fixture's profile is not needed.
import { expect, test } from '@playwright/test';

const DURING = {
  workload: 'a write/FLUSH workload',
  create: 'disk creation',
  resize: 'a workload that grows and shrinks the disk',
  close: 'a workload that closes and reopens the disk',
} as const;

/**
 * The trials per backend, in order: one runner session (one browser,
 * relaunched after each kill) per backend, each trial in the next mode of
 * its list. An overlay cannot resize.
 */
const PLAN: Record<CrashBackend, readonly CrashMode[]> = {
  opfs: ['workload', 'resize', 'close', 'create', 'workload', 'resize', 'close', 'workload'],
  indexeddb: ['workload', 'resize', 'close', 'create', 'workload', 'resize', 'close', 'workload'],
  'overlay-opfs': ['workload', 'close', 'create', 'workload'],
  'overlay-indexeddb': ['workload', 'close', 'workload'],
};

for (const [backend, modes] of Object.entries(PLAN) as Array<[CrashBackend, readonly CrashMode[]]>) {
  const during = [...new Set(modes)].map((m) => DURING[m]).join(', ');
  test(`${backend}: ${modes.length} crash trials (during ${during}) lose and tear nothing`, async ({ baseURL }, testInfo) => {
    testInfo.setTimeout(240_000);
    // A seed per run, printed, so that a failure can be replayed (each PROBLEM names its trial's seed).
    const seed = Math.floor(Math.random() * 100000);
    console.log(`crash trials ${backend} ${modes.join(',')}: seed ${seed}`);
    const summary = await runCrashTrials({ backend, mode: modes, runs: modes.length, seed, baseURL: baseURL! });
    expect(summary.problems).toEqual([]);
    expect(summary.trials).toBe(modes.length);
    expect(summary.sectorsChecked).toBeGreaterThan(0);
    expect(summary.flushesBeforeKill).toBeGreaterThan(0);
    expect([summary.lostSectors, summary.tornSectors]).toEqual([0, 0]);
  });
}
