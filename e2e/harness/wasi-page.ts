// The harness page for e2e/wasi.spec.ts: starts the program worker
// (wasi-worker.ts) and the backend workers whose channels it hands to it,
// because only the page can end a backend worker while the program's worker
// is blocked on it. Exposes `window.harness` (the program worker) and
// `window.wasiPage` (the page-side steps).

import type { BackendSpec } from '../../src/host/browser/worker-protocol.ts';
import { startBackendWorker, type BackendWorkerDisk } from '../../src/wasi/backend-host.ts';
import { ChannelState, ChannelWord } from '../../src/wasi/sync-protocol.ts';
import { connect, type HarnessClient } from './rpc.ts';

declare global {
  interface Window {
    harness?: HarnessClient;
    wasiPage?: typeof wasiPage;
  }
}

const remotes = new Map<string, BackendWorkerDisk>();
const worker = new Worker(new URL('./wasi-worker.ts', import.meta.url), { type: 'module' });
const harness = await connect(worker);

const wasiPage = {
  /** Open `spec` in a new backend worker, known by `name`. */
  async remote(name: string, spec: BackendSpec): Promise<number> {
    const disk = await startBackendWorker(spec);
    remotes.set(name, disk);
    return disk.size;
  },
  /** Run the Ruby proof with the named remotes' channels. */
  ruby: (idbName: string, directIo: boolean) => harness.call('ruby', { idb: remotes.get('idb')!.channel, idbName, ro: remotes.get('ro')!.channel, directIo }),
  /**
   * Start the stall program on remote `name`, wait until its backend worker
   * has taken the stalling request, then end that worker: raw (`kill`, as a
   * crash would, nobody told) or through the host (`terminate`).
   */
  async stall(name: string, how: 'kill' | 'terminate', timeoutMs: number): Promise<unknown> {
    const disk = remotes.get(name)!;
    const result = harness.call('stall', { channel: disk.channel, timeoutMs });
    const words = new Int32Array(disk.channel, 0, 8);
    // The first read (offset 0) completes; the second is the one that stalls.
    while (!(Atomics.load(words, ChannelWord.State) === ChannelState.Working && Atomics.load(words, ChannelWord.Served) >= 1)) {
      await new Promise((r) => setTimeout(r, 5));
    }
    if (how === 'kill') disk.worker.terminate();
    else disk.terminate();
    return result;
  },
};

window.harness = harness;
window.wasiPage = wasiPage;
document.body.dataset.ready = 'true';
