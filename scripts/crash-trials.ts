// npm run crash-trials -- --runs N [--backend opfs|indexeddb|overlay-opfs|overlay-indexeddb|overlay|all] [--mode workload|create|resize|close|all] [--seed S] [--port P] [--quiet]
//
// Many crash trials (e2e/harness/crash-runner.ts): for each backend and mode,
// N trials of "SIGKILL the browser at a random moment, relaunch, check every
// sector against the model of what was flushed". Serves the harness with its
// own Vite server on --port (default $E2E_PORT or 5321) unless one already
// answers there. Prints one line per trial and a summary per backend and mode;
// exits 1 when any sector was lost or torn or any trial failed.
//
// --break-flush (self-test, docs/crash-trials.md): run on a disk that drops
// FLUSHes; the run must then find losses, and exits 1 if it finds none.

import { createServer } from 'vite';
import { CRASH_MODES, runCrashTrials, type CrashMode } from '../e2e/harness/crash-runner.ts';
import { CRASH_BACKENDS, type CrashBackend } from '../e2e/harness/crash-model.ts';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const runs = Number(arg('runs', '20'));
const seed = Number(arg('seed', String(Date.now() % 100000)));
const port = Number(arg('port', process.env.E2E_PORT ?? '5321'));
// 'overlay' is both overlays (an OPFS top and an IndexedDB top over a memory base).
const backends = arg('backend', 'all')
  .split(',')
  .flatMap((b) => (b === 'all' ? [...CRASH_BACKENDS] : b === 'overlay' ? ['overlay-opfs', 'overlay-indexeddb'] : [b])) as CrashBackend[];
for (const b of backends) if (!CRASH_BACKENDS.includes(b)) throw new Error(`--backend ${b}: not one of ${CRASH_BACKENDS.join(', ')}, overlay, all`);
const modes = arg('mode', 'all') === 'all' ? [...CRASH_MODES] : arg('mode', '').split(',').map((m) => m as CrashMode);
const quiet = process.argv.includes('--quiet');
const breakFlush = process.argv.includes('--break-flush');
if (!(Number.isInteger(runs) && runs > 0)) throw new Error(`--runs ${runs} is not a positive whole number`);
for (const m of modes) if (!CRASH_MODES.includes(m)) throw new Error(`--mode ${m}: not one of ${CRASH_MODES.join(', ')}, all`);

const baseURL = `http://127.0.0.1:${port}`;
const running = await fetch(baseURL).then(
  () => true,
  () => false,
);
const server = running ? null : await createServer({ server: { port, strictPort: true, hmr: false, watch: null } });
await server?.listen();

console.log(`crash trials: ${runs} per backend and mode, seed ${seed}, ${baseURL}${breakFlush ? ', on the BROKEN disk (self-test)' : ''}`);
let failed = false;
try {
  for (const backend of backends) {
    for (const mode of modes) {
      // An overlay has a fixed size: no resize trials for it.
      if (mode === 'resize' && backend.startsWith('overlay')) continue;
      const started = Date.now();
      const summary = await runCrashTrials({ backend, mode, runs, seed, baseURL, breakFlush, onTrial: quiet ? undefined : (line) => console.log(line) });
      // The self-test passes when the broken disk was caught.
      failed ||= breakFlush ? summary.problems.length === 0 : summary.problems.length > 0;
      for (const p of summary.problems) console.log(`PROBLEM ${backend} ${mode}: ${p}`);
      console.log(
        `SUMMARY ${backend} ${mode}: ${summary.trials} trials, ` +
          (mode !== 'create'
            ? `${summary.flushesBeforeKill} completed FLUSHes before the kills, ${summary.sectorsChecked} sectors checked, ${summary.lostSectors} lost, ${summary.tornSectors} torn`
            : `${summary.creationsBeforeKill} creations completed before the kills`) +
          `, ${summary.problems.length} problems, ${((Date.now() - started) / 1000 / Math.max(summary.trials, 1)).toFixed(1)} s per trial`,
      );
    }
  }
} finally {
  await server?.close();
}
process.exit(failed ? 1 : 0);
