// The crash-trial harness page: starts the crash worker, exposes it to the
// runner as `window.harness`, and hands every report the worker posts to the
// runner's binding `vbwCrashReport` (Chromium has a `window.crashReport` of its own) (e2e/harness/crash-runner.ts).

import { connect, type HarnessClient } from './rpc.ts';

declare global {
  interface Window {
    harness?: HarnessClient;
    vbwCrashReport?: (report: unknown) => Promise<void>;
  }
}

const worker = new Worker(new URL('./crash-worker.ts', import.meta.url), { type: 'module' });
// Reports the runner has received, counted in shared memory: the worker
// keeps at most a few ops ahead of it (see crash-worker.ts), so that the
// runner's kill lands among ops still running, not after the workload ended.
const received = new Int32Array(new SharedArrayBuffer(4));
worker.addEventListener('message', (event: MessageEvent<{ report?: unknown }>) => {
  if (event.data.report === undefined) return;
  void window.vbwCrashReport?.(event.data.report).then(() => {
    Atomics.add(received, 0, 1);
    Atomics.notify(received, 0);
  });
});
window.harness = await connect(worker);
await window.harness.call('setReceivedCounter', { counter: received.buffer });
document.body.dataset.ready = 'true';
