// The transfer harness page: start the worker (OPFS disks open only in a
// dedicated worker) and expose it to Playwright as `window.harness`.

import { connect, type HarnessClient } from './rpc.ts';

declare global {
  interface Window {
    harness?: HarnessClient;
  }
}

const worker = new Worker(new URL('./transfer-worker.ts', import.meta.url), { type: 'module' });
window.harness = await connect(worker);
document.body.dataset.ready = 'true';
