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
worker.addEventListener('message', (event: MessageEvent<{ report?: unknown }>) => {
  if (event.data.report !== undefined) void window.vbwCrashReport?.(event.data.report);
});
window.harness = await connect(worker);
document.body.dataset.ready = 'true';
