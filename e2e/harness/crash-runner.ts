// Crash trials, the Node side (used by e2e/crash.spec.ts and
// scripts/crash-trials.ts): launch Chromium on a persistent profile, start a
// workload or a series of disk creations in the crash harness
// (crash-worker.ts), SIGKILL the browser's whole process group when the
// worker's N-th report arrives (N drawn from the trial's seed; the reports
// lag the worker by a few milliseconds, so the kill lands anywhere: inside a
// write, a FLUSH's transactions, a creation), relaunch on the same profile,
// and check the disk against the model (crash-model.ts) in the relaunched
// browser, which then runs the next trial. No sleeps: every wait is for an
// event (a report, a page being ready, a call returning).
//
// Modes: 'workload' (writes, write-zeroes and FLUSHes on the backend),
// 'create' (disks made one after another), 'resize' and 'close' (a workload
// through a Disk with Disk.resize, or Disk.close and a reopen, among its
// ops; crash-model.ts says what each promises).

import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from '@playwright/test';
import { chromiumArgs, chromiumExecutable } from '../chromium.ts';
import { xorshift32, type CheckResult, type WorkloadShape } from './crash-model.ts';
import type { CrashBackend, CrashReport } from './crash-worker.ts';

export type CrashMode = 'workload' | 'create' | 'resize' | 'close';
export const CRASH_MODES: readonly CrashMode[] = ['workload', 'create', 'resize', 'close'];

export interface CrashTrialOptions {
  backend: CrashBackend;
  /** One mode, or several: trial t then runs modes[t % modes.length], all in one browser session (fewer launches). */
  mode: CrashMode | readonly CrashMode[];
  runs: number;
  /** Seeds trial t with seed * 100000 + t, so a failing trial can be replayed. */
  seed: number;
  /** Where Vite serves e2e/harness/crash.html. */
  baseURL: string;
  /** Called after each checked trial. */
  onTrial?: (line: string) => void;
  /**
   * Self-test only: run the trials on crash-broken.ts's disk, which drops
   * every second FLUSH and the flush of every close. The trials must then
   * report lost sectors (or lost markers); a run that does not is a trial
   * that cannot fail.
   */
  breakFlush?: boolean;
}

export interface CrashTrialSummary {
  backend: CrashBackend;
  /** The modes run, joined by '+'. */
  mode: string;
  /** Trials run and checked. */
  trials: number;
  /** Completed FLUSHes (and closes) the runner heard of before its kills (workload, resize and close modes). */
  flushesBeforeKill: number;
  /** Creations the runner heard of before its kills (create mode). */
  creationsBeforeKill: number;
  sectorsChecked: number;
  lostSectors: number;
  tornSectors: number;
  /** Descriptions of every failure (empty when all trials passed). */
  problems: string[];
}

const WORKLOAD_OPS = 300;
const DISK_SECTORS = 8192; // 4 MiB
const CREATIONS = 5;

function generator(seed: number): () => number {
  return xorshift32((seed * 2654435761) >>> 0 || 1);
}

export async function runCrashTrials(options: CrashTrialOptions): Promise<CrashTrialSummary> {
  const { backend } = options;
  const modes: readonly CrashMode[] = typeof options.mode === 'string' ? [options.mode] : options.mode;
  if (modes.length === 0) throw new Error('no crash mode given');
  if (modes.includes('resize') && backend.startsWith('overlay')) throw new Error(`${backend}: an overlay cannot resize (its base has a fixed size)`);
  const summary: CrashTrialSummary = {
    backend,
    mode: modes.join('+'),
    trials: 0,
    flushesBeforeKill: 0,
    creationsBeforeKill: 0,
    sectorsChecked: 0,
    lostSectors: 0,
    tornSectors: 0,
    problems: [],
  };
  const dir = await mkdtemp(join(tmpdir(), 'virtio-blk-web-crash-'));
  let reports: CrashReport[] = [];
  let waiter: { count: number; resolve: () => void } | null = null;
  const launch = async (): Promise<BrowserContext> => {
    const context = await chromium.launchPersistentContext(dir, {
      executablePath: chromiumExecutable(),
      args: chromiumArgs(),
      headless: true,
      baseURL: options.baseURL,
    });
    await context.exposeBinding('vbwCrashReport', (_source, report: CrashReport) => {
      reports.push(report);
      if (waiter && reports.length >= waiter.count) waiter.resolve();
    });
    return context;
  };
  const open = async (context: BrowserContext): Promise<Page> => {
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto('/e2e/harness/crash.html');
    await page.waitForFunction(() => document.body.dataset.ready === 'true');
    return page;
  };
  const call = <T>(page: Page, op: string, args: unknown) =>
    page.evaluate(([o, a]) => window.harness!.call(o, a), [op, args] as const) as Promise<T>;

  let context = await launch();
  /** The check of the previous trial, run in the relaunched browser. */
  let check: ((page: Page) => Promise<void>) | null = null;
  try {
    for (let t = 0; t <= options.runs; t++) {
      const page = await open(context);
      if (check) {
        await check(page);
        check = null;
      }
      if (t === options.runs) break;
      const trialSeed = options.seed * 100000 + t;
      const next = generator(trialSeed);
      const mode = modes[t % modes.length]!;
      reports = [];
      // Kill when this many reports have arrived (or when the run ends by itself).
      const total = mode === 'create' ? 2 * CREATIONS : WORKLOAD_OPS;
      const killAt = 1 + (next() % (total - 1));
      const reached = new Promise<void>((resolve) => (waiter = { count: killAt, resolve }));
      const name = `trial-${t}`;
      const shape: WorkloadShape = {
        seed: trialSeed,
        ops: WORKLOAD_OPS,
        sectors: DISK_SECTORS,
        variant: mode === 'workload' || mode === 'create' ? 'plain' : mode,
        base: backend.startsWith('overlay'),
      };
      const broken = options.breakFlush === true;
      const run =
        mode === 'create'
          ? call(page, 'create', { backend, prefix: name, seed: trialSeed, count: CREATIONS, broken })
          : call(page, 'workload', { backend, name, shape, broken });
      // Errors after the kill are expected; before it they are failures.
      let runError: unknown = null;
      const ran = run.then(
        () => undefined,
        (err: unknown) => void (runError = err),
      );
      await Promise.race([reached, ran]);
      killProcessGroup(dir);
      await ran;
      waiter = null;
      if (runError && reports.length < killAt) summary.problems.push(`trial ${t} (seed ${trialSeed}): failed before the kill: ${String(runError)}`);
      const seen = [...reports];
      if (seen.length === 0) summary.problems.push(`trial ${t} (seed ${trialSeed}): no report reached the runner before the kill`);
      await context.close().catch(() => undefined);
      context = await launch();

      if (mode !== 'create') {
        let lastFlush = -1;
        for (const r of seen) if ('op' in r && r.flush) lastFlush = r.op;
        summary.flushesBeforeKill += seen.filter((r) => 'op' in r && r.flush).length;
        check = async (p) => {
          const result = await call<CheckResult>(p, 'checkWorkload', { backend, name, shape, lastFlush });
          summary.trials++;
          summary.sectorsChecked += result.sectors;
          summary.lostSectors += result.lost;
          summary.tornSectors += result.torn;
          if (result.lost || result.torn) {
            summary.problems.push(`trial ${t} (seed ${trialSeed}, killed after ${seen.length} reports, last flush op ${lastFlush}): ${result.lost} lost, ${result.torn} torn: ${result.examples.join('; ')}`);
          }
          options.onTrial?.(`${backend} ${mode} trial ${t}: ${seen.length} ops reported, last flush op ${lastFlush}, ${result.sectors} sectors, lost ${result.lost}, torn ${result.torn}`);
        };
      } else {
        let created = -1;
        let started = -1;
        for (const r of seen) {
          if ('created' in r) created = r.created;
          if ('creating' in r) started = r.creating;
        }
        summary.creationsBeforeKill += created + 1;
        check = async (p) => {
          const problems = await call<string[]>(p, 'checkCreate', { backend, prefix: name, seed: trialSeed, upTo: started + 1, created });
          summary.trials++;
          for (const problem of problems) summary.problems.push(`trial ${t} (seed ${trialSeed}): ${problem}`);
          options.onTrial?.(`${backend} create trial ${t}: killed while creating disk ${started} (${created + 1} done), ${problems.length} problems`);
        };
      }
    }
  } finally {
    await context.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
  return summary;
}

/**
 * SIGKILL every process of the browser running on `profileDir`: the process
 * groups of the processes whose command line names the profile (Playwright
 * starts the browser as a group leader), then any straggler by pid.
 */
export function killProcessGroup(profileDir: string): void {
  const out = execFileSync('ps', ['-eo', 'pid=,pgid=,args='], { encoding: 'utf8' });
  const ours = process.pid;
  const ownGroup = Number(execFileSync('ps', ['-o', 'pgid=', '-p', String(ours)], { encoding: 'utf8' }).trim());
  const rows = out
    .split('\n')
    .filter((line) => line.includes(`--user-data-dir=${profileDir}`))
    .map((line) => line.trim().split(/\s+/).slice(0, 2).map(Number) as [number, number]);
  if (rows.length === 0) throw new Error(`no browser process found for profile ${profileDir}`);
  for (const group of new Set(rows.map(([, pgid]) => pgid))) {
    if (group === ownGroup || !(group > 1)) continue;
    try {
      process.kill(-group, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  for (const [pid] of rows) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}
